#!/usr/bin/env bash
# Make sure RabbitMQ answers on 127.0.0.1:5672 as guest/guest: install it if missing, start the app if it
# was stopped, restart a node that no longer answers, and restore the guest user if it was removed.
set -euo pipefail

PORT=5672
WAIT_SECONDS=${RABBITMQ_WAIT_SECONDS:-120}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
app_running() { port_open && timeout 20 rabbitmq-diagnostics -q check_running >/dev/null 2>&1; }
node_answers() { timeout 20 rabbitmq-diagnostics -q ping >/dev/null 2>&1; }

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "rabbitmq: installing the Debian package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq rabbitmq-server >/dev/null
fi

if ! app_running; then
    if node_answers; then
        echo "rabbitmq: node up, app stopped: starting the app"
        timeout 120 rabbitmqctl start_app >/dev/null || true
    else
        echo "rabbitmq: node not answering: (re)starting it"
        pkill -f 'rabbitmqctl|rabbitmq-diagnostics' 2>/dev/null || true
        pkill -f 'beam.smp.*rabbit' 2>/dev/null || true
        sleep 3
        pkill -9 -f 'beam.smp.*rabbit' 2>/dev/null || true
        rabbitmq-server -detached || true
    fi
fi

wipe_and_restart() {
    echo "rabbitmq: node still not answering: moving its database aside and starting afresh" >&2
    pkill -9 -f 'beam.smp.*rabbit' 2>/dev/null || true
    sleep 1
    mv /var/lib/rabbitmq/mnesia "/var/lib/rabbitmq/mnesia.broken.$(date +%s)" 2>/dev/null || true
    rabbitmq-server -detached || true
}

for i in $(seq "$WAIT_SECONDS"); do
    if [ "$i" -eq 60 ] && ! app_running; then
        wipe_and_restart
    fi
    if app_running; then
        if ! timeout 20 rabbitmqctl -q list_users 2>/dev/null | grep -q '^guest'; then
            echo "rabbitmq: restoring the guest user"
            timeout 20 rabbitmqctl -q add_user guest guest
            timeout 20 rabbitmqctl -q set_user_tags guest administrator
            timeout 20 rabbitmqctl -q set_permissions -p / guest '.*' '.*' '.*'
        fi
        if [ -x .venv/bin/python ] && [ -f tests/broker_cleanup.py ]; then
            timeout 600 .venv/bin/python tests/broker_cleanup.py || true
        fi
        echo "rabbitmq: ready on 127.0.0.1:$PORT"
        exit 0
    fi
    sleep 1
done
echo "rabbitmq: nothing answers on 127.0.0.1:$PORT after ${WAIT_SECONDS}s; see /var/log/rabbitmq/" >&2
exit 1
