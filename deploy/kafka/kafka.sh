#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, combined broker + controller) on 127.0.0.1
# for development, tests and the demo, run from Apache Kafka's own jars on
# Maven Central. Needs only Java >= 17 and Maven.
#
#   deploy/kafka/kafka.sh up       resolve jars (first run), format storage (first
#                                  run), start the broker, wait until it answers
#   deploy/kafka/kafka.sh down     stop it (SIGTERM, then SIGKILL after a timeout)
#   deploy/kafka/kafka.sh status   exit 0 if it is up and answers, 1 otherwise
#
# Every command is idempotent: `up` when up and `down` when down do nothing.
#
# Environment (defaults in brackets):
#   KAFKA_HOST             listener address               [127.0.0.1]
#   KAFKA_PORT             client (PLAINTEXT) port        [9092]
#   KAFKA_CONTROLLER_PORT  KRaft controller port          [KAFKA_PORT + 1000]
#   KAFKA_DATA_DIR         storage, logs, pidfile         [<repo>/.cache/kafka-data,
#                                                          or .cache/kafka-data-<port>
#                                                          when KAFKA_PORT is not 9092]
#   KAFKA_CACHE_DIR        resolved jars, per version     [<repo>/.cache/kafka]
#   KAFKA_VERSION          Apache Kafka release           [pinned in pom.xml]
#   KAFKA_CLUSTER_ID       cluster id used on format      [random]
#   KAFKA_HEAP_OPTS        JVM heap                       [-Xms256m -Xmx512m]
#   KAFKA_JVM_OPTS         extra JVM options              []
#   KAFKA_MAVEN_OPTS       extra Maven arguments          []
#   KAFKA_SECURE_PORT      a second client listener with TLS and SASL/SCRAM
#                          (SASL_SSL) on this port          [unset: none]
#   KAFKA_SASL_USER / KAFKA_SASL_PASSWORD  its SCRAM user   [driftrec / driftrec-secret]
#   KAFKA_TLS_DIR          its CA and broker certificate, made at the first
#                          start (self-signed CA: ca.pem)  [<data dir>/tls]
#   KAFKA_START_TIMEOUT    seconds to wait for `up`       [60]
#   KAFKA_STOP_TIMEOUT     seconds before SIGKILL         [30]
#   JAVA_HOME              Java to use                    [java on PATH]
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
POM="$SCRIPT_DIR/pom.xml"

say() { printf 'kafka.sh: %s\n' "$*"; }
die() { printf 'kafka.sh: error: %s\n' "$*" >&2; exit 1; }

check_port() {
    local name=$1 value=$2
    if ! [[ $value =~ ^[0-9]{1,5}$ ]] || ((10#$value < 1 || 10#$value > 65535)); then
        die "$name must be a TCP port number in 1..65535, got '$value'"
    fi
}

pom_kafka_version() {
    sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n 1
}

KAFKA_HOST=${KAFKA_HOST:-127.0.0.1}
KAFKA_PORT=${KAFKA_PORT:-9092}
check_port KAFKA_PORT "$KAFKA_PORT"
KAFKA_PORT=$((10#$KAFKA_PORT))
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1000))}
check_port KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
KAFKA_CONTROLLER_PORT=$((10#$KAFKA_CONTROLLER_PORT))
# One data dir per port by default, so brokers on two ports never share a pidfile.
if [[ $KAFKA_PORT == 9092 ]]; then
    DEFAULT_DATA_DIR="$REPO_ROOT/.cache/kafka-data"
else
    DEFAULT_DATA_DIR="$REPO_ROOT/.cache/kafka-data-$KAFKA_PORT"
fi
KAFKA_DATA_DIR=$(realpath -m "${KAFKA_DATA_DIR:-$DEFAULT_DATA_DIR}")
KAFKA_CACHE_DIR=$(realpath -m "${KAFKA_CACHE_DIR:-$REPO_ROOT/.cache/kafka}")
KAFKA_VERSION=${KAFKA_VERSION:-$(pom_kafka_version)}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
KAFKA_JVM_OPTS=${KAFKA_JVM_OPTS:-}
KAFKA_MAVEN_OPTS=${KAFKA_MAVEN_OPTS:-}
KAFKA_SECURE_PORT=${KAFKA_SECURE_PORT:-}
[[ -z $KAFKA_SECURE_PORT ]] || check_port KAFKA_SECURE_PORT "$KAFKA_SECURE_PORT"
KAFKA_SASL_USER=${KAFKA_SASL_USER:-driftrec}
KAFKA_SASL_PASSWORD=${KAFKA_SASL_PASSWORD:-driftrec-secret}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-60}
KAFKA_STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}

LIBS_DIR="$KAFKA_CACHE_DIR/$KAFKA_VERSION/libs"
LOG_DIRS="$KAFKA_DATA_DIR/kraft-combined-logs"
PROPS="$KAFKA_DATA_DIR/server.properties"
PIDFILE="$KAFKA_DATA_DIR/kafka.pid"
FORMATTED="$KAFKA_DATA_DIR/formatted.env"
SERVER_LOG="$KAFKA_DATA_DIR/server.log"
CONSOLE_LOG="$KAFKA_DATA_DIR/kafka.out"
KAFKA_TLS_DIR=$(realpath -m "${KAFKA_TLS_DIR:-$KAFKA_DATA_DIR/tls}")

# Take an exclusive lock on $1 for the rest of the script (fd 9), so that two
# concurrent `up`/`down` on the same data dir cannot interleave.
lock_data_dir() {
    mkdir -p "$KAFKA_DATA_DIR"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$KAFKA_DATA_DIR/.lock"
        flock -w 120 9 || die "could not lock $KAFKA_DATA_DIR/.lock within 120 s"
    fi
}

find_java() {
    local java major
    if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
        java="$JAVA_HOME/bin/java"
    else
        java=$(command -v java) || die "no 'java' on PATH and JAVA_HOME unset; Java >= 17 is needed"
    fi
    major=$("$java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
    [[ -n $major ]] || die "could not read the version of $java"
    ((major >= 17)) || die "$java is Java $major; Kafka $KAFKA_VERSION needs Java >= 17"
    JAVA=$java
}

# --- process / port checks -------------------------------------------------

# The pid in the pidfile if that process is alive and is *our* broker (its
# command line names our server.properties), so a recycled pid is never taken
# for the broker.
broker_pid() {
    local pid
    [[ -f $PIDFILE ]] || return 1
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "kafka.Kafka $PROPS" || return 1
    printf '%s\n' "$pid"
}

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# A real metadata round trip: list the topics through the client port.
broker_answers() {
    timeout 30 "$JAVA" -Xmx128m -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$SCRIPT_DIR/tools-log4j2.yaml" \
        -cp "$LIBS_DIR/*" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "$KAFKA_HOST:$KAFKA_PORT" --list >/dev/null 2>&1
}

show_logs() {
    local file
    for file in "$CONSOLE_LOG" "$SERVER_LOG"; do
        if [[ -s $file ]]; then
            printf -- '----- last lines of %s -----\n' "$file" >&2
            tail -n 40 "$file" >&2
        fi
    done
}

# --- up ----------------------------------------------------------------------

resolve_jars() {
    local want tmp mvn_log
    want="kafka=$KAFKA_VERSION pom-sha256=$(sha256sum "$POM" | cut -d' ' -f1)"
    if [[ -f $LIBS_DIR/.resolved && $(<"$LIBS_DIR/.resolved") == "$want" ]]; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "Maven ('mvn') is needed once to fetch the Kafka jars"
    mkdir -p "$KAFKA_CACHE_DIR/$KAFKA_VERSION"
    tmp=$(mktemp -d "$KAFKA_CACHE_DIR/$KAFKA_VERSION/.libs.XXXXXX")
    mvn_log="$tmp.mvn.log"
    say "resolving Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIBS_DIR (once)"
    # shellcheck disable=SC2086  # KAFKA_MAVEN_OPTS is a list of arguments
    if ! mvn -B -q -f "$POM" -Dkafka.version="$KAFKA_VERSION" $KAFKA_MAVEN_OPTS \
        dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" \
        >"$mvn_log" 2>&1; then
        tail -n 40 "$mvn_log" >&2
        rm -rf "$tmp" "$mvn_log"
        die "Maven could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (log above)"
    fi
    ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 \
        || { rm -rf "$tmp" "$mvn_log"; die "Maven ran but no kafka_2.13 jar landed in $tmp"; }
    printf '%s\n' "$want" >"$tmp/.resolved"
    rm -rf "$LIBS_DIR" "$mvn_log"
    mv "$tmp" "$LIBS_DIR"
}

render_properties() {
    sed -e "s|@HOST@|$KAFKA_HOST|g" \
        -e "s|@PORT@|$KAFKA_PORT|g" \
        -e "s|@CONTROLLER_PORT@|$KAFKA_CONTROLLER_PORT|g" \
        -e "s|@LOG_DIRS@|$LOG_DIRS|g" \
        "$SCRIPT_DIR/server.properties.template" >"$PROPS.tmp"
    if [[ -n $KAFKA_SECURE_PORT ]]; then
        # A SASL_SSL client listener beside PLAINTEXT (which brokers and tools keep using).
        local secure="SASL_SSL://$KAFKA_HOST:$KAFKA_SECURE_PORT"
        sed -i -e "s|^\(listeners=.*\)$|\1,$secure|" \
            -e "s|^\(advertised.listeners=.*\)$|\1,$secure|" \
            -e "s|^\(listener.security.protocol.map=.*\)$|\1,SASL_SSL:SASL_SSL|" "$PROPS.tmp"
        cat >>"$PROPS.tmp" <<EOF_SECURE

############################# TLS + SASL/SCRAM listener (KAFKA_SECURE_PORT) #############
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_TLS_DIR/broker.pem
EOF_SECURE
    fi
    mv "$PROPS.tmp" "$PROPS"
}

# A self-signed CA and a broker certificate for $KAFKA_HOST, 127.0.0.1 and
# localhost, made once per TLS dir: clients trust ca.pem.
make_tls() {
    [[ -n $KAFKA_SECURE_PORT ]] || return 0
    [[ -s $KAFKA_TLS_DIR/broker.pem && -s $KAFKA_TLS_DIR/ca.pem ]] && return 0
    command -v openssl >/dev/null 2>&1 || die "openssl is needed to make the TLS listener's certificates"
    mkdir -p "$KAFKA_TLS_DIR"
    say "making a self-signed CA and a broker certificate in $KAFKA_TLS_DIR"
    (
        cd "$KAFKA_TLS_DIR"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=driftrec local CA" \
            -keyout ca.key -out ca.pem
        openssl req -newkey rsa:2048 -nodes -subj "/CN=$KAFKA_HOST" -keyout broker.key -out broker.csr
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost%s\n' \
            "$([[ $KAFKA_HOST =~ ^[0-9.]+$ ]] && echo ",IP:$KAFKA_HOST" || echo ",DNS:$KAFKA_HOST")" >san.ext
        openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile san.ext -out broker.crt
        openssl pkcs8 -topk8 -nocrypt -in broker.key -out broker.pk8
        cat broker.pk8 broker.crt ca.pem >broker.pem
        rm -f broker.csr broker.key broker.pk8 san.ext ca.srl
        chmod 600 ca.key broker.pem
    ) >"$KAFKA_DATA_DIR/tls.log" 2>&1 || { cat "$KAFKA_DATA_DIR/tls.log" >&2; die "making the certificates failed"; }
}

# The SCRAM user of the secure listener (both mechanisms), set through PLAINTEXT.
add_scram_user() {
    [[ -n $KAFKA_SECURE_PORT ]] || return 0
    local mechanism
    for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do
        timeout 60 "$JAVA" -Xmx128m -XX:TieredStopAtLevel=1 \
            -Dlog4j2.configurationFile="$SCRIPT_DIR/tools-log4j2.yaml" \
            -cp "$LIBS_DIR/*" org.apache.kafka.tools.ConfigCommand \
            --bootstrap-server "$KAFKA_HOST:$KAFKA_PORT" --alter --entity-type users \
            --entity-name "$KAFKA_SASL_USER" \
            --add-config "$mechanism=[iterations=4096,password=$KAFKA_SASL_PASSWORD]" \
            >>"$KAFKA_DATA_DIR/scram.log" 2>&1 \
            || { cat "$KAFKA_DATA_DIR/scram.log" >&2; die "could not create the SCRAM user $KAFKA_SASL_USER"; }
    done
}

random_cluster_id() {
    # Kafka's Uuid: 16 random bytes, URL-safe base64 without padding (22 chars);
    # like Uuid.randomUuid(), never one starting with '-' (it reads as an option).
    local id
    while :; do
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
        [[ $id == -* ]] || break
    done
    printf '%s\n' "$id"
}

format_storage() {
    local cluster_id formatted_controller
    if [[ -f $LOG_DIRS/meta.properties ]]; then
        # The standalone voter set written at format time holds the controller
        # endpoint, so the controller port cannot change afterwards.
        if [[ -f $FORMATTED ]]; then
            formatted_controller=$(sed -n 's/^controller=//p' "$FORMATTED")
            if [[ -n $formatted_controller && $formatted_controller != "$KAFKA_HOST:$KAFKA_CONTROLLER_PORT" ]]; then
                die "$KAFKA_DATA_DIR was formatted for controller $formatted_controller, not" \
                    "$KAFKA_HOST:$KAFKA_CONTROLLER_PORT; set KAFKA_CONTROLLER_PORT accordingly," \
                    "use another KAFKA_DATA_DIR, or delete $KAFKA_DATA_DIR"
            fi
        fi
        return 0
    fi
    cluster_id=${KAFKA_CLUSTER_ID:-$(random_cluster_id)}
    say "formatting $LOG_DIRS (cluster id $cluster_id)"
    "$JAVA" -Xmx256m -Dlog4j2.configurationFile="$SCRIPT_DIR/tools-log4j2.yaml" \
        -cp "$LIBS_DIR/*" kafka.tools.StorageTool format --standalone \
        -t "$cluster_id" -c "$PROPS" >"$KAFKA_DATA_DIR/format.log" 2>&1 \
        || { cat "$KAFKA_DATA_DIR/format.log" >&2; die "formatting $LOG_DIRS failed"; }
    printf 'cluster_id=%s\ncontroller=%s\n' "$cluster_id" \
        "$KAFKA_HOST:$KAFKA_CONTROLLER_PORT" >"$FORMATTED"
}

cmd_up() {
    local pid started deadline
    [[ $KAFKA_PORT != "$KAFKA_CONTROLLER_PORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"
    lock_data_dir
    if pid=$(broker_pid); then
        grep -q "^listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT," "$PROPS" \
            || die "the broker of $KAFKA_DATA_DIR (pid $pid) runs with other listeners:" \
                "$(grep '^listeners=' "$PROPS"); stop it first or use another KAFKA_DATA_DIR"
        say "already up: pid $pid on $KAFKA_HOST:$KAFKA_PORT (data in $KAFKA_DATA_DIR)"
        return 0
    fi
    rm -f "$PIDFILE"
    local port
    for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" ${KAFKA_SECURE_PORT:+"$KAFKA_SECURE_PORT"}; do
        if port_open "$KAFKA_HOST" "$port"; then
            die "$KAFKA_HOST:$port is already in use by a process this script did not start" \
                "(for data dir $KAFKA_DATA_DIR); stop it or choose another KAFKA_PORT"
        fi
    done
    find_java
    resolve_jars
    make_tls
    render_properties
    format_storage

    started=$SECONDS
    say "starting Apache Kafka $KAFKA_VERSION (KRaft) on $KAFKA_HOST:$KAFKA_PORT, controller :$KAFKA_CONTROLLER_PORT"
    cd "$KAFKA_DATA_DIR"
    # shellcheck disable=SC2086  # heap and JVM options are lists of arguments
    setsid nohup "$JAVA" $KAFKA_HEAP_OPTS \
        -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
        -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
        $KAFKA_JVM_OPTS \
        -Dkafka.logs.dir="$KAFKA_DATA_DIR" \
        -Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2.yaml" \
        -cp "$LIBS_DIR/*" kafka.Kafka "$PROPS" \
        >"$CONSOLE_LOG" 2>&1 </dev/null 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$PIDFILE"

    deadline=$((SECONDS + KAFKA_START_TIMEOUT))
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PIDFILE"
            show_logs
            die "the broker (pid $pid) exited during startup (logs above)"
        fi
        if port_open "$KAFKA_HOST" "$KAFKA_PORT" && broker_answers; then
            break
        fi
        if ((SECONDS >= deadline)); then
            show_logs
            stop_pid "$pid"
            die "the broker did not answer on $KAFKA_HOST:$KAFKA_PORT within ${KAFKA_START_TIMEOUT}s; stopped it (logs above)"
        fi
        sleep 0.5
    done
    add_scram_user
    say "up: pid $pid on $KAFKA_HOST:$KAFKA_PORT after $((SECONDS - started)) s (logs in $KAFKA_DATA_DIR)"
    if [[ -n $KAFKA_SECURE_PORT ]]; then
        say "TLS + SASL/SCRAM on $KAFKA_HOST:$KAFKA_SECURE_PORT: user $KAFKA_SASL_USER, CA $KAFKA_TLS_DIR/ca.pem"
    fi
}

# --- down --------------------------------------------------------------------

stop_pid() {
    local pid=$1 deadline
    kill -TERM "$pid" 2>/dev/null || return 0
    deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            say "pid $pid still alive ${KAFKA_STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$PIDFILE"
}

cmd_down() {
    local pid
    lock_data_dir
    if ! pid=$(broker_pid); then
        rm -f "$PIDFILE"
        say "not running (data dir $KAFKA_DATA_DIR)"
        return 0
    fi
    say "stopping pid $pid"
    stop_pid "$pid"
    say "down"
}

# --- status ------------------------------------------------------------------

cmd_status() {
    local pid
    if ! pid=$(broker_pid); then
        say "down (no broker of data dir $KAFKA_DATA_DIR is running)"
        return 1
    fi
    if ! port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
        say "pid $pid is running but $KAFKA_HOST:$KAFKA_PORT does not accept connections (starting, or wrong KAFKA_PORT)"
        return 1
    fi
    say "up: pid $pid on $KAFKA_HOST:$KAFKA_PORT (Kafka $KAFKA_VERSION, data in $KAFKA_DATA_DIR)"
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *)
        printf 'usage: %s {up|down|status}\n' "$0" >&2
        exit 2
        ;;
esac
