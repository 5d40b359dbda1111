/*
 * component.h — external components (XEP-0114, "jabber:component:accept").
 *
 * A `component` listener (config `listen: - module: component`) runs this
 * role on its connections (stream/conn.h).  A component names its
 * domain in the stream header, proves the shared secret with the
 * <handshake/> digest, and from then on its domain is a service route
 * (include/xmppd/service.h): stanzas to the domain or any JID at it go to
 * the component, and stanzas it sends are routed if their 'from' is at its
 * domain.  The route goes away with the connection.
 */
#ifndef XMPPD_S2S_COMPONENT_H
#define XMPPD_S2S_COMPONENT_H

struct xd_conn_role;

/* The role of connections accepted on component listeners. */
extern const struct xd_conn_role xd_component_role;

#endif
