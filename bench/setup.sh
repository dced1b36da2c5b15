#!/bin/sh
# Installs what the Nest-level comparison needs on a Debian machine: the Redis, NATS and MQTT
# servers Nest's built-in transports talk to. The rest of the suite needs only `npm ci`.
set -e
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server nats-server mosquitto
# The suite starts its own servers on loopback; the packaged services are not needed.
for s in redis-server mosquitto nats-server; do $SUDO systemctl disable --now "$s" 2>/dev/null || true; done
