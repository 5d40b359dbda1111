#!/bin/bash
# ejabberd (Debian 23.01) with PEP (XEP-0163) for bench/pep.py: mod_pubsub
# with the plugins of Debian's default configuration (flat, pep; items in
# Mnesia, the default db_type) beside the harness's plain ejabberd adapter
# (whose config leaves PubSub out): the same script (../ejabberd/server.sh)
# with its own port, domain, Erlang distribution port, node name and state
# ($BENCH_RUN/ejabberd-pep/ejabberd).  mod_caps (entity capabilities, which
# the +notify filter needs) is in the plain config already.
# usage: as ../ejabberd/server.sh
here=$(cd "$(dirname "$0")" && pwd)
export EJ_PORT=${EJP_PORT:-5226} EJ_DOMAIN=${EJP_DOMAIN:-ejp.test} EJ_DISTPORT=${EJP_DISTPORT:-25803}
. "$here/../common.sh"
export BENCH_RUN=$BENCH_RUN/ejabberd-pep
RUN=$BENCH_RUN/ejabberd
inner=$here/../ejabberd/server.sh
case ${1:-} in
setup)
    "$inner" setup || exit 1
    yml=$RUN/etc/ejabberd.yml
    sed -i 's/^ERLANG_NODE=.*/ERLANG_NODE=ejpep@localhost/' "$RUN/etc/ejabberdctl.cfg"
    # mod_pubsub into the modules section, as Debian's ejabberd.yml has it
    sed -i 's/^modules:$/modules:\n  mod_pubsub:\n    plugins:\n      - flat\n      - pep/' "$yml"
    grep -q '^  mod_pubsub:' "$yml" || { log "cannot add mod_pubsub to $yml"; exit 1; }
    chown -R ejabberd:ejabberd "$RUN"
    ;;
start)
    [ -f "$RUN/etc/ejabberd.yml" ] || "$0" setup || exit 1
    exec "$inner" start
    ;;
*) exec "$inner" "$@" ;;
esac
