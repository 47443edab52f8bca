#!/bin/sh
# keepalived beside HAProxy (the compose profile `ha-router`, and the test bed runs this same
# script): renders etc/keepalived.conf.template from the environment and runs the VRRP
# daemon in the foreground. Refuses to start, naming the variable, when a setting is missing.
set -eu
: "${ROUTER_VIP:?set ROUTER_VIP to the virtual IP clients connect to (an unused address of the routers network)}"
: "${VRRP_PRIORITY:?set VRRP_PRIORITY (1-254; the higher one is MASTER first, e.g. 150 and 100)}"
export ROUTER_VIP VRRP_PRIORITY
export ROUTER_VIP_PREFIX="${ROUTER_VIP_PREFIX:-24}"
export VRRP_INTERFACE="${VRRP_INTERFACE:-eth0}"
export VRRP_ROUTER_ID="${VRRP_ROUTER_ID:-51}"
export VRRP_NAME="${VRRP_NAME:-$(hostname)}"
template="${KEEPALIVED_TEMPLATE:-/etc/keepalived/keepalived.conf.template}"
run="${KEEPALIVED_RUNDIR:-/run/keepalived}"
mkdir -p "$run"
envsubst < "$template" > "$run/keepalived.conf"
keepalived --config-test --use-file="$run/keepalived.conf"
exec keepalived --dont-fork --log-console --no-syslog --vrrp \
    --use-file="$run/keepalived.conf" --pid="$run/keepalived.pid" \
    --vrrp_pid="$run/vrrp.pid" --checkers_pid="$run/checkers.pid"
