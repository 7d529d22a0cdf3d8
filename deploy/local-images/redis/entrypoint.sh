#!/bin/sh
# As the official image does: a server started without a config file listens on every interface
# of the container with protected mode off (the container network is the boundary).
set -e
if [ "$1" = "redis-server" ]; then
  shift
  exec redis-server --protected-mode no "$@"
fi
exec "$@"
