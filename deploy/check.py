#!/usr/bin/env python3
"""Structural checks of the deployment files, run by deploy/check.sh.

The external tools (kubernetes-validate, hadolint, systemd-analyze, docker
compose) check syntax against their own schemas. What they cannot know is
checked here: the Prometheus Operator kinds, which the Kubernetes schemas do
not cover; the promises this project makes about its manifests (non-root,
read-only root, probes, resources); and whether the files point at each
other correctly (selectors, ports, mounts, paths).

    check.py manifests KUBERNETES_VERSION... -- FILE...
    check.py kustomized KUSTOMIZE_OUTPUT
    check.py compose REPO_ROOT
    check.py envfile FILE

Every subcommand prints one line per finding and exits 1 if there was any.
"""

import json
import re
import sys
from pathlib import Path, PurePosixPath

import jsonschema
import yaml

# Set when a check fails; main() turns it into the exit code.
FAILED = False


def fail(where, message):
    global FAILED
    FAILED = True
    print(f"FAIL {where}: {message}")


def ok(where, message):
    print(f"ok   {where}: {message}")


def load_documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def name_of(resource):
    return f"{resource.get('kind')}/{resource.get('metadata', {}).get('name')}"


# --- Prometheus Operator kinds -------------------------------------------
#
# Hand-written from the fields of monitoring.coreos.com/v1 that these files
# use, not the operator's full CRD schema (that is not available here). The
# rule and group objects are closed, because a misspelt key there (`annotation`,
# `for_`) is silently ignored by Prometheus; elsewhere unknown keys are let
# through, since the CRD has many fields these files do not use.

# Prometheus' duration syntax, e.g. 90s, 5m, 1h30m; units largest first.
DURATION = r"^(0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$"

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
}

LABEL_SELECTOR = {
    "type": "object",
    "properties": {
        "matchLabels": STRING_MAP,
        "matchExpressions": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": False,
}

RULE = {
    "type": "object",
    "properties": {
        "record": {"type": "string"},
        "alert": {"type": "string"},
        "expr": {"type": ["string", "integer"]},
        "for": {"type": "string", "pattern": DURATION},
        "keep_firing_for": {"type": "string", "pattern": DURATION},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
    },
    "required": ["expr"],
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
    "additionalProperties": False,
}

PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": DURATION},
                            "query_offset": {"type": "string", "pattern": DURATION},
                            "limit": {"type": "integer"},
                            "labels": STRING_MAP,
                            "partial_response_strategy": {"type": "string"},
                            "rules": {"type": "array", "items": RULE},
                        },
                    },
                }
            },
        },
    },
    "additionalProperties": False,
}

SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {"type": "object"},
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
    "additionalProperties": False,
}

CUSTOM_SCHEMAS = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
}


def check_custom_kind(where, resource, schema):
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(resource), key=str)
    for error in errors:
        path = ".".join(str(p) for p in error.absolute_path) or "(top)"
        fail(where, f"{name_of(resource)}: {path}: {error.message}")
    if not errors:
        ok(where, f"{name_of(resource)} matches the hand-written structural schema")


def check_core_kind(where, resource, versions):
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    for version in versions:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except SchemaNotFoundError:
            # The tool itself only warns here; for a core kind that would
            # mean nothing was checked, so it counts as a failure.
            fail(where, f"{name_of(resource)}: no schema for it in Kubernetes {version}")
            return
        except ValidationError as error:
            path = ".".join(str(p) for p in error.path) or "(top)"
            fail(where, f"{name_of(resource)}: Kubernetes {version}: {path}: {error.message}")
            return
    ok(where, f"{name_of(resource)} valid (strict) for Kubernetes {', '.join(versions)}")


# --- The project's own promises about the exporter's pods ----------------


def pod_spec_of(resource):
    if resource.get("kind") == "Pod":
        return resource.get("spec", {})
    if resource.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
        return resource.get("spec", {}).get("template", {}).get("spec", {})
    return None


def is_exporter(container):
    image = container.get("image", "")
    return image.split("/")[-1].split(":")[0].split("@")[0] == "crs-backup-exporter"


def check_exporter_container(where, pod, container):
    label = f"container {container.get('name')}"
    pod_sc = pod.get("securityContext", {})
    sc = container.get("securityContext", {})

    def either(key):
        return sc.get(key, pod_sc.get(key))

    problems = []
    if either("runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        problems.append("capabilities.drop is not [ALL]")
    if sc.get("capabilities", {}).get("add"):
        problems.append("capabilities are added")
    if (either("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("seccompProfile is not RuntimeDefault")
    if either("runAsUser") in (None, 0):
        problems.append("no numeric non-root runAsUser")
    if container.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/-/healthy":
        problems.append("liveness probe is not GET /-/healthy")
    if container.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/-/ready":
        problems.append("readiness probe is not GET /-/ready")
    resources = container.get("resources", {})
    for part in ("requests", "limits"):
        for kind in ("cpu", "memory"):
            if kind not in resources.get(part, {}):
                problems.append(f"no {part}.{kind}")
    ports = [p.get("containerPort") for p in container.get("ports", [])]
    if 9887 not in ports:
        problems.append("does not expose port 9887")

    for problem in problems:
        fail(where, f"{label}: {problem}")
    if not problems:
        ok(where, f"{label}: non-root, read-only, no capabilities, probes and resources set")


def check_policies(where, resource):
    pod = pod_spec_of(resource)
    if pod is None:
        return
    exporters = [c for c in pod.get("containers", []) if is_exporter(c)]
    if not exporters:
        fail(where, f"{name_of(resource)}: no crs-backup-exporter container")
    for container in exporters:
        check_exporter_container(where, pod, container)


def manifests(argv):
    split = argv.index("--")
    versions, files = argv[:split], argv[split + 1:]
    for path in files:
        documents = load_documents(path)
        if not documents:
            fail(path, "no Kubernetes resource in the file")
        for resource in documents:
            key = (resource.get("apiVersion"), resource.get("kind"))
            if key in CUSTOM_SCHEMAS:
                check_custom_kind(path, resource, CUSTOM_SCHEMAS[key])
            else:
                check_core_kind(path, resource, versions)
            check_policies(path, resource)


# --- The standalone set, as kustomize renders it -------------------------


def kustomized(argv):
    resources = load_documents(argv[0])
    where = "kustomize output"
    by_kind = {}
    for resource in resources:
        by_kind.setdefault(resource["kind"], []).append(resource)

    expected = {"ConfigMap", "Deployment", "Service", "ServiceMonitor", "PrometheusRule"}
    missing = expected - set(by_kind)
    if missing:
        fail(where, f"rendered set lacks {', '.join(sorted(missing))}")
        return
    if "Secret" in by_kind:
        fail(where, "rendered set holds a Secret; placeholder credentials must not be applied")

    deployment = by_kind["Deployment"][0]
    pod = deployment["spec"]["template"]
    service = by_kind["Service"][0]
    monitor = by_kind["ServiceMonitor"][0]
    config_map = by_kind["ConfigMap"][0]

    # Service -> pods.
    pod_labels = pod["metadata"].get("labels", {})
    if not service["spec"]["selector"].items() <= pod_labels.items():
        fail(where, "Service selector does not match the Deployment's pod labels")
    container = next(c for c in pod["spec"]["containers"] if is_exporter(c))
    container_ports = {p.get("name") for p in container.get("ports", [])}
    for port in service["spec"]["ports"]:
        if port.get("targetPort") not in container_ports | {9887}:
            fail(where, f"Service targetPort {port.get('targetPort')} is not a container port")

    # ServiceMonitor -> Service.
    wanted = monitor["spec"]["selector"].get("matchLabels", {})
    if not wanted.items() <= service["metadata"].get("labels", {}).items():
        fail(where, "ServiceMonitor selector does not match the Service's labels")
    service_ports = {p.get("name") for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        if endpoint.get("port") not in service_ports:
            fail(where, f"ServiceMonitor port {endpoint.get('port')} is not a Service port")

    # Deployment -> ConfigMap, and the config inside it.
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    config_names = {v["configMap"]["name"] for v in volumes.values() if "configMap" in v}
    if config_map["metadata"]["name"] not in config_names:
        fail(where, "the Deployment does not mount the ConfigMap")
    check_exporter_config(where, config_map, container, volumes)

    if not FAILED:
        ok(where, "selectors, ports, mounts and config agree across the rendered set")


def check_exporter_config(where, config_map, container, volumes):
    try:
        config = yaml.safe_load(config_map["data"]["config.yaml"])
    except (KeyError, yaml.YAMLError) as err:
        fail(where, f"ConfigMap has no readable config.yaml: {err}")
        return
    instances = config.get("instances") or []
    if not instances:
        fail(where, "config.yaml lists no instances")
    for instance in instances:
        if not {"instance_id", "region"} <= set(instance):
            fail(where, f"config.yaml instance without instance_id and region: {instance}")

    # Where the container will look for config.yaml and the secret key.
    mounts = {m["mountPath"]: volumes.get(m["name"], {}) for m in container["volumeMounts"]}
    config_arg = next(
        (a.split("=", 1)[1] for a in container.get("args", []) if a.startswith("--config.file=")),
        None,
    )
    if config_arg is None or "configMap" not in mounts.get(str(PurePosixPath(config_arg).parent), {}):
        fail(where, f"--config.file {config_arg} is not inside the ConfigMap's mount")
    key_file = (config.get("credentials") or {}).get("secret_key_file")
    if key_file:
        parent = mounts.get(str(PurePosixPath(key_file).parent), {})
        items = [i["path"] for i in parent.get("secret", {}).get("items", [])]
        if "secret" not in parent or (items and PurePosixPath(key_file).name not in items):
            fail(where, f"secret_key_file {key_file} is not a file of a mounted Secret")


# --- docker-compose.yaml and the files it mounts -------------------------


def compose(argv):
    root = Path(argv[0])
    where = "docker-compose.yaml"
    with open(root / where, encoding="utf-8") as f:
        spec = yaml.safe_load(f)
    services = spec.get("services", {})
    for name in ("exporter", "prometheus", "grafana"):
        if name not in services:
            fail(where, f"no service {name}")
    if FAILED:
        return

    exporter = services["exporter"]
    dockerfile = root / exporter["build"].get("context", ".") / exporter["build"]["dockerfile"]
    if not dockerfile.is_file():
        fail(where, f"exporter builds from {dockerfile}, which does not exist")
    if exporter.get("command", [None])[0] != "demo":
        fail(where, "exporter does not run the demo")

    # Every bind mount names a path that exists in the repository.
    mounts = {}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                if not (root / source).exists():
                    fail(where, f"{name} mounts {source}, which does not exist")
                mounts[target] = root / source
    check_prometheus_config(root, mounts)
    check_grafana_provisioning(root, mounts)
    if not FAILED:
        ok(where, "services, build file, mounts and provisioning files agree")


def host_path(mounts, container_path):
    """The repository file that a container path is mounted from, if any."""
    path = PurePosixPath(container_path)
    for target, source in mounts.items():
        if path == PurePosixPath(target):
            return source
        if PurePosixPath(target) in path.parents:
            return source / path.relative_to(target)
    return None


def check_prometheus_config(root, mounts):
    where = "deploy/compose/prometheus.yml"
    with open(root / where, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    for rule_file in config.get("rule_files", []):
        source = host_path(mounts, rule_file)
        if source is None or not source.is_file():
            fail(where, f"rule file {rule_file} is not a mounted file of the repository")
    jobs = {job["job_name"]: job for job in config.get("scrape_configs", [])}
    targets = [
        t for c in jobs.get("crs-backup-exporter", {}).get("static_configs", [])
        for t in c.get("targets", [])
    ]
    if "exporter:9887" not in targets:
        fail(where, "no scrape job for exporter:9887")


def check_grafana_provisioning(root, mounts):
    base = "deploy/compose/grafana/provisioning"
    with open(root / base / "datasources/prometheus.yaml", encoding="utf-8") as f:
        sources = yaml.safe_load(f)["datasources"]
    if not any(s.get("type") == "prometheus" and s.get("url") == "http://prometheus:9090"
               for s in sources):
        fail(base, "no Prometheus data source at http://prometheus:9090")

    with open(root / base / "dashboards/crs-backup-exporter.yaml", encoding="utf-8") as f:
        providers = yaml.safe_load(f)["providers"]
    for provider in providers:
        source = host_path(mounts, provider["options"]["path"])
        if source is None or not source.is_dir():
            fail(base, f"dashboard path {provider['options']['path']} is not mounted")
            continue
        dashboards = sorted(source.glob("*.json"))
        if not dashboards:
            fail(base, f"no dashboard JSON in {source.relative_to(root)}")
        for path in dashboards:
            try:
                dashboard = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as err:
                fail(base, f"{path.relative_to(root)} is not JSON: {err}")
                continue
            if not isinstance(dashboard, dict) or "title" not in dashboard:
                fail(base, f"{path.relative_to(root)} is not a dashboard (no title)")


# --- The systemd environment file ----------------------------------------

ENV_LINE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=.*$")


def envfile(argv):
    where = argv[0]
    names = set()
    with open(where, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if not ENV_LINE.match(line):
                fail(where, f"line {number} is not NAME=value")
            names.add(line.split("=", 1)[0])
    for name in ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"):
        if name not in names:
            fail(where, f"does not set {name}")
    if not FAILED:
        ok(where, "NAME=value lines, credentials variables present")


def main():
    commands = {
        "manifests": manifests,
        "kustomized": kustomized,
        "compose": compose,
        "envfile": envfile,
    }
    if len(sys.argv) < 3 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2:])
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
