/*
 * ns.h — the XML namespace names xmppd uses (public module API).
 *
 * One #define per namespace, so a typo is a compile error and one grep finds
 * every user.  Values are the exact strings of the RFCs and XEPs; compare
 * them with strcmp (a parsed tree never interns them).  Append in the group
 * where a name belongs.
 */
#ifndef XMPPD_NS_H
#define XMPPD_NS_H

/* XML itself. */
#define XD_NS_XML   "http://www.w3.org/XML/1998/namespace"
#define XD_NS_XMLNS "http://www.w3.org/2000/xmlns/"

/* Stream content namespaces, RFC 6120 4.8.2 and XEP-0114. */
#define XD_NS_CLIENT    "jabber:client"
#define XD_NS_SERVER    "jabber:server"
#define XD_NS_COMPONENT "jabber:component:accept"

/* Streams and their features, RFC 6120. */
#define XD_NS_STREAMS       "http://etherx.jabber.org/streams"
#define XD_NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define XD_NS_STANZAS       "urn:ietf:params:xml:ns:xmpp-stanzas"
#define XD_NS_TLS           "urn:ietf:params:xml:ns:xmpp-tls"
#define XD_NS_SASL          "urn:ietf:params:xml:ns:xmpp-sasl"
#define XD_NS_BIND          "urn:ietf:params:xml:ns:xmpp-bind"
#define XD_NS_SESSION       "urn:ietf:params:xml:ns:xmpp-session"
#define XD_NS_DIALBACK      "jabber:server:dialback"
#define XD_NS_DIALBACK_FEAT "urn:xmpp:features:dialback"
#define XD_NS_SM            "urn:xmpp:sm:3"
#define XD_NS_CSI           "urn:xmpp:csi:0"
#define XD_NS_SASL2         "urn:xmpp:sasl:2"   /* XEP-0388 */
#define XD_NS_BIND2         "urn:xmpp:bind:0"   /* XEP-0386 */
#define XD_NS_FAST          "urn:xmpp:fast:0"   /* XEP-0484 */
#define XD_NS_ROSTERVER     "urn:xmpp:features:rosterver"
#define XD_NS_PRE_APPROVAL  "urn:xmpp:features:pre-approval"
#define XD_NS_REGISTER_FEAT "http://jabber.org/features/iq-register"
#define XD_NS_COMPRESS_FEAT "http://jabber.org/features/compress"

/* IM and core extensions. */
#define XD_NS_ROSTER       "jabber:iq:roster"
#define XD_NS_PRIVACY      "jabber:iq:privacy"
#define XD_NS_PRIVATE      "jabber:iq:private"
#define XD_NS_VERSION      "jabber:iq:version"
#define XD_NS_LAST         "jabber:iq:last"
#define XD_NS_REGISTER     "jabber:iq:register"
#define XD_NS_AUTH         "jabber:iq:auth"
#define XD_NS_DATA         "jabber:x:data"
#define XD_NS_X_CONFERENCE "jabber:x:conference"
#define XD_NS_OOB          "jabber:x:oob"
#define XD_NS_DISCO_INFO   "http://jabber.org/protocol/disco#info"
#define XD_NS_DISCO_ITEMS  "http://jabber.org/protocol/disco#items"
#define XD_NS_COMMANDS     "http://jabber.org/protocol/commands"
#define XD_NS_CAPS         "http://jabber.org/protocol/caps"
#define XD_NS_CHATSTATES   "http://jabber.org/protocol/chatstates"
#define XD_NS_MUC          "http://jabber.org/protocol/muc"
#define XD_NS_MUC_USER     "http://jabber.org/protocol/muc#user"
#define XD_NS_MUC_ADMIN    "http://jabber.org/protocol/muc#admin"
#define XD_NS_MUC_OWNER    "http://jabber.org/protocol/muc#owner"
#define XD_NS_PUBSUB       "http://jabber.org/protocol/pubsub"
#define XD_NS_PUBSUB_EVENT "http://jabber.org/protocol/pubsub#event"
#define XD_NS_PUBSUB_OWNER "http://jabber.org/protocol/pubsub#owner"
#define XD_NS_RSM          "http://jabber.org/protocol/rsm"
#define XD_NS_STATS        "http://jabber.org/protocol/stats"
#define XD_NS_VCARD        "vcard-temp"
#define XD_NS_VCARD_UPDATE "vcard-temp:x:update"
#define XD_NS_PING         "urn:xmpp:ping"
#define XD_NS_TIME         "urn:xmpp:time"
#define XD_NS_DELAY        "urn:xmpp:delay"
#define XD_NS_RECEIPTS     "urn:xmpp:receipts"
#define XD_NS_CARBONS      "urn:xmpp:carbons:2"
#define XD_NS_FORWARD      "urn:xmpp:forward:0"
#define XD_NS_MAM          "urn:xmpp:mam:2"
#define XD_NS_BLOCKING     "urn:xmpp:blocking"
#define XD_NS_SID          "urn:xmpp:sid:0"
#define XD_NS_HINTS        "urn:xmpp:hints"
#define XD_NS_HTTP_UPLOAD  "urn:xmpp:http:upload:0"
#define XD_NS_BOSH         "http://jabber.org/protocol/httpbind"
#define XD_NS_XBOSH        "urn:xmpp:xbosh"
#define XD_NS_FRAMING      "urn:ietf:params:xml:ns:xmpp-framing"

#endif
