"""deploy/: the compose file, Kubernetes manifests and systemd units parse and name real things.

What can be checked without Docker or a cluster: every file parses (PyYAML,
systemd's key=value syntax); every ``flagstaff node`` command line is accepted
by the CLI's own parser and builds a valid member configuration (names in
``--initial-cluster``, URLs, TLS flags, compaction); every ``manage.py``
command exists and accepts its options; every Celery option is one the
installed Celery offers; daphne serves an application that exists; every
environment variable given to the platform is one the code reads; and the
Kubernetes objects reference each other consistently.
"""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from consensus.cli import build_parser
from consensus.server.command import config_from_args

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

TLS_FILE_FLAGS = ("cert_file", "key_file", "trusted_ca_file",
                  "peer_cert_file", "peer_key_file", "peer_trusted_ca_file")


# -- the files ---------------------------------------------------------------------------------

def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def objects(kind: str) -> list[dict[str, Any]]:
    return [d for d in manifests() if d["kind"] == kind]


def unit(name: str) -> dict[str, list[str]]:
    """A systemd unit as ``{"Section.Key": [values...]}`` (keys may repeat)."""
    section, parsed = "", {}
    for raw in (DEPLOY / "systemd" / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{name}: bad section line {line!r}"
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep and section, f"{name}: bad line {line!r}"
        parsed.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return parsed


def env_file(name: str) -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{name}: bad line {line!r}"
            values[key.strip()] = value.strip()
    return values


def expand_systemd(command: str, env: dict[str, str]) -> list[str]:
    used = set(re.findall(r"\$\{([A-Z_]+)\}", command))
    missing = used - set(env)
    assert not missing, f"ExecStart uses undefined {sorted(missing)}"
    return shlex.split(re.sub(r"\$\{([A-Z_]+)\}", lambda m: env[m.group(1)], command))


# -- every command line, from every file ------------------------------------------------------

def compose_commands() -> list[tuple[str, list[str]]]:
    out = []
    for name, service in compose()["services"].items():
        command = service.get("command")
        if command is None:
            continue
        out.append((f"compose:{name}", shlex.split(command) if isinstance(command, str) else command))
    return out


def k8s_commands() -> list[tuple[str, list[str]]]:
    out = []
    for obj in manifests():
        spec = obj.get("spec", {})
        template = spec.get("template", {}).get("spec", {})
        replicas = spec.get("replicas", 1)
        for container in template.get("containers", []):
            argv = [*container.get("command", []), *container.get("args", [])]
            if obj["kind"] == "StatefulSet":  # $(POD_NAME) is <name>-<ordinal>
                for i in range(replicas):
                    pod = f"{obj['metadata']['name']}-{i}"
                    out.append((f"k8s:{pod}", [a.replace("$(POD_NAME)", pod) for a in argv]))
            else:
                out.append((f"k8s:{obj['metadata']['name']}", argv))
    return out


def systemd_commands() -> list[tuple[str, list[str]]]:
    out = []
    for path in sorted((DEPLOY / "systemd").glob("*.service")):
        parsed = unit(path.name)
        env_name = parsed["Service.EnvironmentFile"][0].rsplit("/", 1)[-1] + ".example"
        env = env_file(env_name)
        for command in parsed["Service.ExecStart"]:
            out.append((f"systemd:{path.name}", expand_systemd(command, env)))
    return out


ALL_COMMANDS = compose_commands() + k8s_commands() + systemd_commands()


def program(argv: list[str]) -> str:
    return Path(argv[0]).name


# -- checks per program ----------------------------------------------------------------------

def check_flagstaff(argv: list[str], tmp_path: Path) -> None:
    args = argv[1:]
    assert args[0] == "node", f"only `flagstaff node` runs in production, not {args[0]!r}"
    ns = build_parser(args).parse_args(args)  # SystemExit(2) on an unknown flag or bad value
    for attr in TLS_FILE_FLAGS:  # the files exist on the real hosts; stand-ins here
        if getattr(ns, attr):
            stand_in = tmp_path / attr
            stand_in.write_text("")
            setattr(ns, attr, str(stand_in))
    config = config_from_args(ns)
    assert config.data_dir.startswith("/"), "members keep their data on a mounted volume"


def check_manage(argv: list[str]) -> None:
    from django.core.management import get_commands, load_command_class

    assert program(argv).startswith("python") and argv[1] == "manage.py"
    name, rest = argv[2], argv[3:]
    commands = get_commands()
    assert name in commands, f"manage.py has no command {name!r}"
    command = load_command_class(commands[name], name)
    command.create_parser("manage.py", name).parse_args(rest)


@cache
def celery_help(subcommand: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "flagstaff_platform", subcommand, "--help"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={"PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}", "PATH": "/usr/bin:/bin",
             "DJANGO_SETTINGS_MODULE": "flagstaff_platform.settings_for_tests",
             "FLAGSTAFF_VAR_DIR": str(ROOT / "var")},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def check_celery(argv: list[str]) -> None:
    assert argv[1:3] == ["-A", "flagstaff_platform"]
    importlib.import_module("flagstaff_platform.celery")
    subcommand, options = argv[3], argv[4:]
    assert subcommand in ("worker", "beat")
    text = celery_help(subcommand)
    for option in options:
        flag = option.split("=", 1)[0]
        assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", text), f"celery {subcommand} has no {flag}"


def check_daphne(argv: list[str]) -> None:
    app = argv[-1]
    module, _, attr = app.partition(":")
    assert getattr(importlib.import_module(module), attr) is not None
    opts = dict(zip(argv[1:-1:2], argv[2:-1:2], strict=True))
    assert set(opts) == {"-b", "-p"} and int(opts["-p"]) == 8000


@pytest.mark.django_db
@pytest.mark.parametrize(("where", "argv"), ALL_COMMANDS, ids=[w for w, _ in ALL_COMMANDS])
def test_every_command_line_is_accepted(where: str, argv: list[str], tmp_path: Path) -> None:
    name = program(argv)
    if name == "flagstaff":
        check_flagstaff(argv, tmp_path)
    elif name == "celery":
        check_celery(argv)
    elif name == "daphne":
        check_daphne(argv)
    else:
        check_manage(argv)


def test_every_process_kind_is_deployed_everywhere() -> None:
    def kinds(commands: list[tuple[str, list[str]]]) -> set[str]:
        found = set()
        for _, argv in commands:
            if program(argv) == "flagstaff":
                found.add("member")
            elif program(argv) == "celery":
                found.add(argv[3])
            elif program(argv) == "daphne":
                found.add("web")
            else:
                found.add(argv[2])
        return found

    wanted = {"member", "web", "worker", "beat", "run_discovery", "prepare_platform"}
    assert kinds(compose_commands()) == wanted
    assert kinds(k8s_commands()) == wanted
    assert kinds(systemd_commands()) == wanted
    assert {"redis", "postgres"} <= set(compose()["services"])
    members = [w for w, argv in compose_commands() if program(argv) == "flagstaff"]
    assert len(members) == 3


# -- environment variables ----------------------------------------------------------------

_READ_ENV = re.compile(r"""(?:os\.environ\.get|os\.getenv|_env_bool|_env_list|os\.environ\[)\(?\s*["']([A-Z][A-Z0-9_]*)["']""")
RUNTIME_ENV = {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PROMETHEUS_MULTIPROC_DIR"}
"""Read by Django, Python and prometheus_client themselves."""


def env_read_by_the_code() -> set[str]:
    names = set(RUNTIME_ENV)
    for folder in ("platform", "flags", "discovery"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(_READ_ENV.findall(path.read_text()))
    return names


def platform_env() -> dict[str, set[str]]:
    """Every environment variable given to a platform process, by where it is set."""
    found: dict[str, set[str]] = {}
    for name, service in compose()["services"].items():
        if name in ("postgres", "redis") or name.startswith("member"):
            continue
        found[f"compose:{name}"] = set(service.get("environment", {}))
    for obj in manifests():
        if obj["kind"] == "ConfigMap":
            found[f"k8s:{obj['metadata']['name']}"] = set(obj["data"])
        for c in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            found[f"k8s:{obj['metadata']['name']}"] = {e["name"] for e in c.get("env", [])} - {"POD_NAME"}
    found["systemd:platform.env"] = set(env_file("platform.env.example"))
    return found


def test_every_platform_environment_variable_is_read_by_the_code() -> None:
    known = env_read_by_the_code()
    for where, names in platform_env().items():
        unknown = names - known
        assert not unknown, f"{where} sets {sorted(unknown)}, which nothing reads"


def test_the_platform_reaches_the_core_and_its_services_everywhere() -> None:
    for where, names in platform_env().items():
        if where.startswith("compose:") or where == "systemd:platform.env" or where == "k8s:flagstaff-platform":
            assert "FLAGSTAFF_ENDPOINTS" in names, where
    compose_env = compose()["services"]["web"]["environment"]
    for endpoint in compose_env["FLAGSTAFF_ENDPOINTS"].split(","):
        host, port = endpoint.split(":")
        assert host in compose()["services"] and port == "2379"
    for key in ("DATABASE_URL", "REDIS_URL"):
        assert key in compose_env
    assert set(env_file("node.env.example")) == set(
        re.findall(r"\$\{([A-Z_]+)\}", unit("flagstaff-node.service")["Service.ExecStart"][0])
    ), "node.env.example and the node unit name the same variables"


# -- Kubernetes references ------------------------------------------------------------------

def test_kubernetes_core_objects_fit_together() -> None:
    (sts,) = objects("StatefulSet")
    services = {s["metadata"]["name"]: s for s in objects("Service")}
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert headless["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["replicas"] == 3
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    pdbs = [p for p in objects("PodDisruptionBudget")
            if p["spec"]["selector"]["matchLabels"].items() <= labels.items()]
    assert len(pdbs) == 1 and pdbs[0]["spec"]["minAvailable"] == 2  # a quorum of 3
    # The members' --initial-cluster names exactly the StatefulSet's pods at the headless service.
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    initial = next(a for a in args if a.startswith("--initial-cluster="))
    members = dict(item.split("=", 1) for item in initial.split("=", 1)[1].split(","))
    assert members == {
        f"flagstaff-{i}": f"http://flagstaff-{i}.{headless['metadata']['name']}:2380" for i in range(3)
    }
    (config,) = objects("ConfigMap")
    endpoints = config["data"]["FLAGSTAFF_ENDPOINTS"].split(",")
    assert endpoints == [f"flagstaff-{i}.{headless['metadata']['name']}:2379" for i in range(3)]


def test_kubernetes_platform_deployments_use_the_config() -> None:
    deployments = {d["metadata"]["name"]: d for d in objects("Deployment")}
    assert {"flagstaff-web", "flagstaff-worker", "flagstaff-beat", "flagstaff-discovery"} <= set(deployments)
    assert deployments["flagstaff-beat"]["spec"]["replicas"] == 1
    (config,) = objects("ConfigMap")
    for d in deployments.values():
        spec = d["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
        for c in spec["template"]["spec"]["containers"]:
            refs = {r.get("configMapRef", {}).get("name") for r in c["envFrom"]}
            assert config["metadata"]["name"] in refs
    services = {s["metadata"]["name"]: s for s in objects("Service")}
    web_labels = deployments["flagstaff-web"]["spec"]["template"]["metadata"]["labels"]
    assert services["flagstaff-web"]["spec"]["selector"].items() <= web_labels.items()


# -- the image ---------------------------------------------------------------------------------

def test_dockerfile_copies_what_exists() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11" in text
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert compose()["services"]["member1"]["build"]["dockerfile"] == "deploy/Dockerfile"
