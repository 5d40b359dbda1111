#!/bin/bash
# Prosody (Debian 0.12.3) for bench/pep.py: the harness's adapter
# (../prosody/server.sh, whose config loads mod_pep as Prosody's default
# does; items in the "internal" file storage) with its own port, domain and
# state ($BENCH_RUN/prosody-pep/prosody), so it runs beside the plain one.
# usage: as ../prosody/server.sh
here=$(cd "$(dirname "$0")" && pwd)
export PR_PORT=${PRP_PORT:-15226} PR_DOMAIN=${PRP_DOMAIN:-prp.test}
. "$here/../common.sh"
export BENCH_RUN=$BENCH_RUN/prosody-pep
exec "$here/../prosody/server.sh" "$@"
