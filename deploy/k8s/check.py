"""Render every Kustomize overlay and validate the output offline (`make k8s-check`).

For each overlay under deploy/k8s/overlays/ (dev, prod):

* `kubectl kustomize` renders it (kubectl's built-in Kustomize; no cluster is contacted);
* every document is validated with `kubernetes-validate` in strict mode (unknown fields
  are errors) against the schemas of one pinned Kubernetes version. A kind it has no
  schema for is a failure, unless it is a custom resource on the allow-list below, which
  gets a small structural check of its own instead;
* the project's own rules are checked: the pod hardening, probes, resources and shutdown
  settings every service pod must have, a PodDisruptionBudget, HorizontalPodAutoscaler,
  Service and ServiceAccount per service, a default-deny NetworkPolicy, and secret
  references that resolve where the overlay itself defines the Secret;
* each service's settings class (petitions/infra/settings.py) is built from the
  environment its container would get (ConfigMap, literal values, and each secret
  reference: the overlay's own Secret, or a well-formed stand-in for one created out of
  band), so a setting the code requires but a manifest does not provide fails here, and
  the directory and rules files must be keys of the ConfigMap mounted where they point.

It also checks that deploy/k8s/base/config/*.json are identical to config/*.json (a
kustomization can only read files below its own directory, so the base keeps copies);
`--sync` copies them again.

Prints one summary line per overlay; exits non-zero on any failure.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import filecmp
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
OVERLAYS = HERE / "overlays"
CONFIG_FILES = ("directory.json", "routing-rules.json")

# The Kubernetes version the manifests must be valid for (the oldest supported target).
KUBERNETES_VERSION = "1.30.0"

# Custom resources kubernetes-validate has no schema for, accepted by name only.
ALLOWED_CUSTOM_RESOURCES = {
    ("postgresql.cnpg.io/v1", "Cluster"),  # CloudNativePG, prod overlay
}

SERVICES = ("intake", "routing", "deadlines", "notify")
SETTINGS_CLASSES = {"intake": "IntakeSettings", "routing": "RoutingSettings",
                    "deadlines": "DeadlinesSettings", "notify": "NotifySettings"}
# Stand-in for a secret created out of band: base64 of 32 bytes, so it passes both the
# key-length and the "base64 of 16/24/32 bytes" rules; never a development default.
OUT_OF_BAND_SECRET = base64.b64encode(b"k8s-check stand-in, not a secret").decode()
MEMORY_LIMIT_MAX = 384 * 1024**2
APP_USER = 10001


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def __len__(self) -> int:
        return len(self.items)


def kn(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{doc.get('kind')}/{meta.get('name')}" + (f" (ns {ns})" if ns else "")


# -- rendering ---------------------------------------------------------------------------


def render(kubectl: str, overlay: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed:\n{proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


# -- schema validation -------------------------------------------------------------------


def validate_schema(doc: dict[str, Any], version: str, problems: Problems) -> str:
    """'validated', 'allow-listed' or 'failed'."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    try:
        kubernetes_validate.validate(doc, version, strict=True)
        return "validated"
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        problems.add(kn(doc), f"schema ({version}, strict): {path}: {exc.message}")
        return "failed"
    except kubernetes_validate.SchemaNotFoundError:
        if key in ALLOWED_CUSTOM_RESOURCES:
            before = len(problems)
            check_custom_resource(doc, problems)
            return "allow-listed" if len(problems) == before else "failed"
        problems.add(kn(doc), f"no schema for {key[0]} {key[1]} in Kubernetes {version} "
                              "and not on the custom-resource allow-list")
        return "failed"
    except Exception as exc:  # InvalidSchemaError, VersionNotSupportedError, ...
        problems.add(kn(doc), f"could not be validated: {getattr(exc, 'message', exc)}")
        return "failed"


def check_custom_resource(doc: dict[str, Any], problems: Problems) -> None:
    where = kn(doc)
    meta = doc.get("metadata") or {}
    if not meta.get("name"):
        problems.add(where, "metadata.name missing")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        problems.add(where, "spec missing")
        return
    if doc["kind"] == "Cluster":
        if not isinstance(spec.get("instances"), int) or spec["instances"] < 1:
            problems.add(where, "spec.instances must be a positive integer")
        if not (spec.get("storage") or {}).get("size"):
            problems.add(where, "spec.storage.size missing")
        initdb = (spec.get("bootstrap") or {}).get("initdb") or {}
        if not initdb.get("database") or not initdb.get("owner"):
            problems.add(where, "spec.bootstrap.initdb.database/owner missing")
        image = spec.get("imageName", "")
        if not image or image.endswith(":latest") or ":" not in image:
            problems.add(where, "spec.imageName must pin a PostgreSQL image tag")


# -- project rules -------------------------------------------------------------------------


def quantity_bytes(value: Any) -> float:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
             "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    if not m or (m.group(2) and m.group(2) not in units):
        raise ValueError(f"unreadable quantity {value!r}")
    return float(m.group(1)) * units.get(m.group(2), 1)


def pod_templates(docs: Iterable[dict[str, Any]]):
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield doc, doc["spec"]["template"]


def is_app_pod(template: dict[str, Any]) -> bool:
    labels = (template.get("metadata") or {}).get("labels") or {}
    return labels.get("app.kubernetes.io/part-of") == "petitions"


def check_container(where: str, c: dict[str, Any], problems: Problems) -> None:
    where = f"{where} container {c.get('name')}"
    sc = c.get("securityContext") or {}
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.add(where, "securityContext.allowPrivilegeEscalation must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.add(where, "securityContext.readOnlyRootFilesystem must be true")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problems.add(where, "securityContext.capabilities.drop must include ALL")
    if (sc.get("capabilities") or {}).get("add"):
        problems.add(where, "no capabilities may be added")
    resources = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for res in ("cpu", "memory"):
            if res not in (resources.get(kind) or {}):
                problems.add(where, f"resources.{kind}.{res} missing")
    limit = (resources.get("limits") or {}).get("memory")
    if limit is not None and quantity_bytes(limit) > MEMORY_LIMIT_MAX:
        problems.add(where, f"memory limit {limit} is over 384Mi")
    if not any(m.get("mountPath") == "/tmp" for m in c.get("volumeMounts") or []):
        problems.add(where, "needs a writable /tmp (emptyDir) on the read-only root filesystem")
    image = str(c.get("image", ""))
    if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]:
        problems.add(where, f"image {image!r} must carry a pinned tag")


def check_app_pod(doc: dict[str, Any], template: dict[str, Any], problems: Problems,
                  service_accounts: set[str]) -> None:
    where = kn(doc)
    spec = template["spec"]
    if spec.get("automountServiceAccountToken") is not False:
        problems.add(where, "automountServiceAccountToken must be false")
    sa = spec.get("serviceAccountName")
    if not sa or sa not in service_accounts:
        problems.add(where, f"serviceAccountName {sa!r} is not a ServiceAccount of the overlay")
    psc = spec.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != APP_USER:
        problems.add(where, f"pod must run as non-root user {APP_USER}")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.add(where, "pod seccompProfile must be RuntimeDefault")
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        check_container(where, c, problems)


def check_service_deployment(doc: dict[str, Any], problems: Problems) -> None:
    where = kn(doc)
    spec = doc["spec"]["template"]["spec"]
    if spec.get("terminationGracePeriodSeconds") != 30:
        problems.add(where, "terminationGracePeriodSeconds must be 30")
    main = spec["containers"][0]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if probe not in main:
            problems.add(where, f"{probe} missing")
    if (main.get("livenessProbe") or {}).get("httpGet", {}).get("path") != "/healthz":
        problems.add(where, "livenessProbe must GET /healthz")
    if (main.get("readinessProbe") or {}).get("httpGet", {}).get("path") != "/readyz":
        problems.add(where, "readinessProbe must GET /readyz")
    if not ((main.get("lifecycle") or {}).get("preStop")):
        problems.add(where, "preStop hook missing (endpoints must go before SIGTERM)")
    if not any(c.get("command", [])[-1:] == ["petitions.infra.schema"]
               for c in spec.get("initContainers") or []):
        problems.add(where, "initContainer running `python -m petitions.infra.schema` missing")
    annotations = doc["spec"]["template"]["metadata"].get("annotations") or {}
    if annotations.get("prometheus.io/scrape") != "true":
        problems.add(where, "prometheus.io/scrape annotation missing")


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def check_overlay_rules(name: str, docs: list[dict[str, Any]], problems: Problems,
                        out_of_band: dict[str, set[str]]) -> None:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
        if not ((doc.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/part-of"):
            if doc["kind"] not in ("NetworkPolicy",):
                problems.add(kn(doc), "app.kubernetes.io/part-of label missing")
    service_accounts = {d["metadata"]["name"] for d in by_kind.get("ServiceAccount", [])}
    for sa in by_kind.get("ServiceAccount", []):
        if sa.get("automountServiceAccountToken") is not False:
            problems.add(kn(sa), "automountServiceAccountToken must be false")

    app_namespaces: set[str | None] = set()
    for doc, template in pod_templates(docs):
        if is_app_pod(template):
            app_namespaces.add(doc["metadata"].get("namespace"))
            check_app_pod(doc, template, problems, service_accounts)

    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    for service in SERVICES:
        full = f"petitions-{service}"
        dep = deployments.get(full)
        if dep is None:
            problems.add(name, f"Deployment {full} missing")
            continue
        check_service_deployment(dep, problems)
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        if not any(selects(p["spec"]["selector"], pod_labels)
                   for p in by_kind.get("PodDisruptionBudget", [])):
            problems.add(kn(dep), "no PodDisruptionBudget selects its pods")
        if not any(h["spec"]["scaleTargetRef"].get("name") == full
                   for h in by_kind.get("HorizontalPodAutoscaler", [])):
            problems.add(kn(dep), "no HorizontalPodAutoscaler targets it")
        if not any(selects({"matchLabels": s["spec"].get("selector") or {}}, pod_labels)
                   for s in by_kind.get("Service", [])):
            problems.add(kn(dep), "no Service selects its pods")

    for ns in app_namespaces:
        if not any(p["metadata"].get("namespace") == ns and p["spec"].get("podSelector") == {}
                   and set(p["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
                   and not p["spec"].get("ingress") and not p["spec"].get("egress")
                   for p in by_kind.get("NetworkPolicy", [])):
            problems.add(name, f"namespace {ns}: no default-deny (ingress and egress) policy")

    # Secret references: resolve them where the overlay defines the Secret; the others
    # are the secrets to create out of band.
    secrets: dict[tuple[str | None, str], set[str]] = {}
    for s in by_kind.get("Secret", []):
        keys = set((s.get("data") or {}).keys()) | set((s.get("stringData") or {}).keys())
        secrets[(s["metadata"].get("namespace"), s["metadata"]["name"])] = keys
        for k, v in (s.get("data") or {}).items():
            try:
                # kustomize wraps long values; Go's decoder skips the newlines as well
                base64.b64decode(re.sub(r"\s", "", str(v)), validate=True)
            except ValueError:
                problems.add(kn(s), f"data.{k} is not base64")
    for doc, template in pod_templates(docs):
        ns = doc["metadata"].get("namespace")
        for c in (template["spec"].get("initContainers") or []) + template["spec"]["containers"]:
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if not ref:
                    continue
                key = (ns, ref["name"])
                if key in secrets:
                    if ref["key"] not in secrets[key]:
                        problems.add(kn(doc), f"secret {ref['name']} has no key {ref['key']}")
                else:
                    out_of_band.setdefault(f"{ns}/{ref['name']}", set()).add(ref["key"])

    settings = [c for c in by_kind.get("ConfigMap", [])
                if c["metadata"]["name"].startswith("petitions-settings")]
    if len(settings) != 1:
        problems.add(name, "expected exactly one petitions-settings ConfigMap")
    elif name == "prod" and settings[0]["data"].get("PETITIONS_ENV") != "production":
        problems.add(kn(settings[0]), "PETITIONS_ENV must be production in prod")


@contextlib.contextmanager
def environment(env: dict[str, str]):
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def container_env(doc: dict[str, Any], container: dict[str, Any],
                  by_name: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    """The environment the container would start with (values only; no image ENV)."""
    ns = doc["metadata"].get("namespace")
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref:
            env.update((by_name.get(("ConfigMap", ref["name"], ns)) or {}).get("data") or {})
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            secret = by_name.get(("Secret", ref["name"], ns))
            if secret is None:
                env[item["name"]] = OUT_OF_BAND_SECRET
            else:
                raw = (secret.get("data") or {}).get(ref["key"], "")
                env[item["name"]] = base64.b64decode(re.sub(r"\s", "", raw)).decode()
    return env


def check_settings(docs: list[dict[str, Any]], problems: Problems) -> None:
    """Build each service's settings from its pod's environment, as the service would."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from pydantic import ValidationError

    from petitions.infra import settings as settings_module

    by_name = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")): d
               for d in docs}
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        service = doc["metadata"]["name"].removeprefix("petitions-")
        if service not in SETTINGS_CLASSES:
            continue
        spec = doc["spec"]["template"]["spec"]
        container = spec["containers"][0]
        env = container_env(doc, container, by_name)
        cls = getattr(settings_module, SETTINGS_CLASSES[service])
        try:
            with environment(env):
                settings = cls()
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err.get("loc", ())) or "settings"
                problems.add(kn(doc), f"{cls.__name__} refuses the pod's environment: "
                                      f"{field}: {err.get('msg')}")
            continue
        # Files the settings name must be keys of a ConfigMap mounted at their directory.
        mounts = {m["mountPath"].rstrip("/"): m["name"]
                  for m in container.get("volumeMounts") or []}
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for attr in ("directory_file", "rules_file"):
            path = getattr(settings, attr, None)
            if path is None:
                continue
            volume = volumes.get(mounts.get(str(Path(path).parent), ""))
            cm_name = ((volume or {}).get("configMap") or {}).get("name")
            cm = by_name.get(("ConfigMap", cm_name, doc["metadata"].get("namespace")))
            if cm is None or Path(path).name not in (cm.get("data") or {}):
                problems.add(kn(doc), f"{attr} {path} is not a key of a ConfigMap mounted "
                                      "at its directory")


# -- config copies -------------------------------------------------------------------------


def config_drift() -> list[str]:
    drift = []
    for name in CONFIG_FILES:
        src, copy = REPO_ROOT / "config" / name, HERE / "base" / "config" / name
        if not copy.exists() or not filecmp.cmp(src, copy, shallow=False):
            drift.append(name)
    return drift


def sync_config() -> None:
    for name in CONFIG_FILES:
        shutil.copyfile(REPO_ROOT / "config" / name, HERE / "base" / "config" / name)
        print(f"copied config/{name} -> deploy/k8s/base/config/{name}")


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overlays", nargs="*", help="overlay names (default: all)")
    parser.add_argument("--kubectl", default="kubectl")
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    parser.add_argument("--sync", action="store_true",
                        help="copy config/*.json into deploy/k8s/base/config and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every document")
    args = parser.parse_args(argv)

    if args.sync:
        sync_config()
        return 0
    if shutil.which(args.kubectl) is None:
        print(f"k8s-check: FAILED: {args.kubectl} not found (kubectl >= 1.27 with built-in "
              "kustomize is needed to render the overlays)")
        return 2

    failed = False
    drift = config_drift()
    if drift:
        failed = True
        print(f"k8s-check: FAILED: deploy/k8s/base/config/ differs from config/ for "
              f"{', '.join(drift)}; run `.venv/bin/python deploy/k8s/check.py --sync`")

    names = args.overlays or sorted(p.name for p in OVERLAYS.iterdir()
                                    if (p / "kustomization.yaml").exists())
    for name in names:
        problems = Problems()
        counts = {"validated": 0, "allow-listed": 0, "failed": 0}
        out_of_band: dict[str, set[str]] = {}
        try:
            docs = render(args.kubectl, OVERLAYS / name)
        except RuntimeError as exc:
            print(f"k8s-check {name}: FAILED to render\n{exc}")
            failed = True
            continue
        for doc in docs:
            outcome = validate_schema(doc, args.kubernetes_version, problems)
            counts[outcome] += 1
            if args.verbose:
                print(f"  {name}: {kn(doc)}: {outcome}")
        schema_failures = counts["failed"]
        check_overlay_rules(name, docs, problems, out_of_band)
        check_settings(docs, problems)
        for item in problems.items:
            print(f"  {name}: ERROR {item}")
        status = "FAILED" if problems.items else "ok"
        failed = failed or bool(problems.items)
        print(f"k8s-check {name}: {status}: {len(docs)} documents, {counts['validated']} "
              f"valid against Kubernetes {args.kubernetes_version} (strict), "
              f"{counts['allow-listed']} allow-listed custom resources, "
              f"{schema_failures} schema failures, "
              f"{len(problems) - schema_failures} rule failures")
        for secret, keys in sorted(out_of_band.items()):
            print(f"  {name}: secret created out of band: {secret} keys {', '.join(sorted(keys))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
