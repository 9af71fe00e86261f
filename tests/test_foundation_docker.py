"""docker/ cannot run here; keep it consistent with the code instead."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from gateway.cli import build_parser
from gateway.config import load_settings
from gateway.partners import load_partners

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


def _subcommand_paths(parser: argparse.ArgumentParser) -> set[tuple[str, ...]]:
    paths: set[tuple[str, ...]] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.add((name,))
                paths.update((name, *rest) for rest in _subcommand_paths(sub))
    return paths


def _strip_global_options(argv: list[str]) -> list[str]:
    words = list(argv)
    while words and words[0].startswith("--"):
        words = words[2:] if words[0] == "--config" else words[1:]
    return words


def test_every_compose_command_is_a_real_xgw_subcommand() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    known = _subcommand_paths(build_parser())
    xgw_services = 0
    for name, service in compose["services"].items():
        command = service.get("command")
        if not command or command[0] != "xgw":
            continue
        xgw_services += 1
        words = _strip_global_options(command[1:])
        assert (words[0],) in known, f"{name}: 'xgw {words[0]}' is not a subcommand"
        # the whole command line must parse (exits on an unknown option)
        build_parser().parse_args(command[1:])
    assert xgw_services >= 2  # the gateway and the partner simulator


def test_every_referenced_file_exists_and_configs_load() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                path = (DOCKER / source).resolve()
                assert path.exists(), f"{name}: {source} missing"
                if path.name == "xgw.yaml":
                    load_settings(path, environ={})  # the shipped config is valid
                elif path.name == "partners.yaml":
                    load_partners(path)


def test_dockerfile_copies_existing_paths_and_runs_unprivileged() -> None:
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    assert "\nUSER xgw" in text
    assert 'ENTRYPOINT ["xgw"]' in text


def test_readme_and_docs_document_every_subcommand_and_configuration_key() -> None:
    from gateway.config import Settings

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = readme.splitlines()
    assert (
        lines[2] == "```sh" and lines[3].startswith("make run") and lines[4].startswith("make test")
    )
    assert lines[5] == "```"  # exactly two set-up commands, first thing in the README
    for path in _subcommand_paths(build_parser()):
        assert f"xgw {path[0]}" in readme or f"xgw [--config FILE] {path[0]}" in readme, path
    configuration = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert "docs/configuration.md" in readme
    for key in Settings.model_fields:
        assert f"`{key}`" in configuration, key


def test_the_compose_pair_shares_database_and_redis_and_differs_in_node() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))
    nodes = {n: s for n, s in compose["services"].items() if n.startswith("node-")}
    assert len(nodes) >= 2  # 双机热备: two nodes at least
    settings = [
        load_settings(DOCKER / "xgw.yaml", environ=dict(service["environment"]))
        for service in nodes.values()
    ]
    assert len({s.node_id for s in settings}) == len(settings)
    assert len({s.effective_database_url for s in settings}) == 1
    assert len({s.redis_url.get_secret_value() for s in settings if s.redis_url}) == 1
    assert all(s.redis_url is not None for s in settings)
    assert settings[0].effective_database_url.startswith("postgresql://")
    upstreams = (DOCKER / "balancer.conf").read_text(encoding="utf-8")
    assert all(f"server {name}:8080" in upstreams for name in nodes)
