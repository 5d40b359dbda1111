#!/bin/bash
# ejabberd (Debian 23.01) with mod_mam on its SQL backend, sql_type sqlite
# (the message-archive issue's comparison), beside the harness's plain
# ejabberd adapter: the same script (../ejabberd/server.sh) with its own port,
# domain, Erlang distribution port, node name and state
# ($BENCH_RUN/ejabberd-mam/ejabberd), its config patched after `setup`:
#   sql_type: sqlite, sql_database in the state directory, the schema of
#   ejabberd's own lite.sql, mod_mam {db_type: sql, default: always}
#   (archive every message for both parties, as xmppd's mod_mam default).
# Needs erlang-p1-sqlite3 (installed here by `install`).
# usage: as ../ejabberd/server.sh
here=$(cd "$(dirname "$0")" && pwd)
export EJ_PORT=${EJM_PORT:-5224} EJ_DOMAIN=${EJM_DOMAIN:-ejm.test} EJ_DISTPORT=${EJM_DISTPORT:-25801}
. "$here/../common.sh"
export BENCH_RUN=$BENCH_RUN/ejabberd-mam
RUN=$BENCH_RUN/ejabberd
inner=$here/../ejabberd/server.sh
case ${1:-} in
install)
    "$inner" install || exit 1
    ensure_pkg erlang-p1-sqlite3
    ;;
setup)
    "$0" install || exit 1
    "$inner" setup || exit 1
    yml=$RUN/etc/ejabberd.yml
    sed -i 's/^ERLANG_NODE=.*/ERLANG_NODE=ejmam@localhost/' "$RUN/etc/ejabberdctl.cfg"
    db=$RUN/spool/mam.db
    if [ ! -s "$db" ]; then
        sqlite3 "$db" < /usr/share/ejabberd/sql/lite.sql || { log "cannot create $db"; exit 1; }
    fi
    # mod_mam into the modules section (not the file's last), SQL at top level
    sed -i 's/^modules:$/modules:\n  mod_mam:\n    db_type: sql\n    default: always/' "$yml"
    grep -q '^  mod_mam:' "$yml" || { log "cannot add mod_mam to $yml"; exit 1; }
    printf 'sql_type: sqlite\nsql_database: "%s"\n' "$db" >> "$yml"
    chown -R ejabberd:ejabberd "$RUN"
    ;;
start)
    [ -f "$RUN/etc/ejabberd.yml" ] || "$0" setup || exit 1
    exec "$inner" start
    ;;
*) exec "$inner" "$@" ;;
esac
