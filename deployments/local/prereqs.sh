#!/usr/bin/env bash
# Makes sure the machine has what the local stack runs on: Java 17+ (Kafka), Maven (fetches the
# Kafka jars from Maven Central) and PostgreSQL's server binaries. As root on Debian/Ubuntu it
# installs what is missing with apt-get; otherwise it says what to install and exits 1.
set -euo pipefail

missing=()
command -v java >/dev/null 2>&1 || [ -n "${KAFKA_HOME:-}" ] || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || [ -n "${KAFKA_HOME:-}" ] || missing+=(maven)
if [ -z "${YS_POSTGRES_DSN:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    && ! command -v initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "prereqs: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "${missing[@]}" >/dev/null
  exit 0
fi

cat >&2 <<MSG
prereqs: the local stack needs: ${missing[*]}
  Debian/Ubuntu: sudo apt-get install -y ${missing[*]}
  Or point at running services instead: KAFKA_HOME (an installed Kafka) and
  YS_POSTGRES_DSN (an existing PostgreSQL with wal_level=logical), or run the whole stack with
  docker compose -f deployments/docker-compose.yml up -d
MSG
exit 1
