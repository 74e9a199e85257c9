#!/usr/bin/env bash
# Install Debian's ActiveMQ, give its "main" instance a STOMP connector on 127.0.0.1:61613, start it
# and wait until STOMP accepts connections.  Safe to run again: every step checks before it acts.
set -euo pipefail

STOMP_HOST=127.0.0.1
STOMP_PORT=61613
INSTANCE=main
AVAILABLE=/etc/activemq/instances-available/$INSTANCE
ENABLED=/etc/activemq/instances-enabled/$INSTANCE
WAIT_SECONDS=${ACTIVEMQ_WAIT_SECONDS:-180}

port_open() { (exec 3<>"/dev/tcp/$STOMP_HOST/$STOMP_PORT") 2>/dev/null; }

stomp_ready() {
    # A real STOMP handshake with admin/admin, not just an open port.
    python3 - "$STOMP_HOST" "$STOMP_PORT" <<'PY'
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\nlogin:admin\npasscode:admin\n\n\x00")
s.settimeout(10)
reply = s.recv(4096)
sys.exit(0 if reply.startswith(b"CONNECTED") else 1)
PY
}

XML=$AVAILABLE/activemq.xml
if port_open && stomp_ready && grep -q "gcInactiveDestinations" "$XML" 2>/dev/null \
        && grep -q "transport.tcpNoDelay=true" "$XML" 2>/dev/null; then
    echo "activemq: STOMP already answering on $STOMP_HOST:$STOMP_PORT"
    exit 0
fi

if ! dpkg -s activemq >/dev/null 2>&1; then
    echo "activemq: installing the Debian package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq activemq >/dev/null
fi

XML=$AVAILABLE/activemq.xml
if [ ! -f "$XML" ]; then
    echo "activemq: $XML is missing after install; cannot configure the STOMP connector" >&2
    exit 1
fi
CONNECTOR="<transportConnector name=\"stomp\" uri=\"stomp://$STOMP_HOST:$STOMP_PORT?transport.closeAsync=false\&amp;transport.tcpNoDelay=true\"/>"
CHANGED=0
if ! grep -q "transport.tcpNoDelay=true" "$XML"; then
    echo "activemq: adding the STOMP connector (TCP_NODELAY) to $XML"
    sed -i '/<transportConnector name="stomp"/d' "$XML"
    if grep -q "<transportConnectors>" "$XML"; then
        sed -i "s#<transportConnectors>#<transportConnectors>\n            $CONNECTOR#" "$XML"
    else
        sed -i "s#</broker>#    <transportConnectors>\n            $CONNECTOR\n        </transportConnectors>\n    </broker>#" "$XML"
    fi
    CHANGED=1
fi
if ! grep -q "gcInactiveDestinations" "$XML"; then
    # STOMP cannot delete a queue: the bus drains a finished work's results queue and ActiveMQ
    # removes destinations that stay empty and unconsumed for a minute.  Expired messages (dead letters
    # past dlq_ttl) are dropped instead of being kept in ActiveMQ.DLQ.
    echo "activemq: enabling garbage collection of inactive destinations"
    sed -i 's#<broker xmlns="http://activemq.apache.org/schema/core"#<broker xmlns="http://activemq.apache.org/schema/core" schedulePeriodForDestinationPurge="30000"#' "$XML"
    sed -i 's#<persistenceAdapter>#<destinationPolicy><policyMap><policyEntries>\n            <policyEntry queue=">" gcInactiveDestinations="true" inactiveTimoutBeforeGC="60000"><deadLetterStrategy><sharedDeadLetterStrategy processExpired="false"/></deadLetterStrategy></policyEntry>\n        </policyEntries></policyMap></destinationPolicy>\n        <persistenceAdapter>#' "$XML"
    CHANGED=1
fi

mkdir -p /etc/activemq/instances-enabled
if [ ! -e "$ENABLED" ]; then
    ln -s "$AVAILABLE" "$ENABLED"
fi

if [ "$CHANGED" = 1 ] && port_open; then
    echo "activemq: restarting to apply the configuration"
    /etc/init.d/activemq stop || true
    for _ in $(seq 60); do port_open || break; sleep 1; done
fi
echo "activemq: starting"
/etc/init.d/activemq start || true

for _ in $(seq "$WAIT_SECONDS"); do
    if port_open && stomp_ready; then
        echo "activemq: STOMP ready on $STOMP_HOST:$STOMP_PORT"
        exit 0
    fi
    sleep 1
done
echo "activemq: STOMP did not answer on $STOMP_HOST:$STOMP_PORT within ${WAIT_SECONDS}s; see /var/log/activemq/" >&2
exit 1
