"""Configuration: embedded defaults, YAML + env precedence, errors naming the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway.config import ConfigError, Settings, effective_config, load_settings
from tests.conftest import run_xgw, xgw_env


def test_defaults_need_no_configuration() -> None:
    settings = load_settings(environ={})
    assert settings.data_dir == Path("var")
    assert settings.redis_url is None
    assert settings.region_code == "420607"


def test_env_overrides_yaml(tmp_path: Path) -> None:
    config = tmp_path / "xgw.yaml"
    config.write_text("port: 9001\nnode_id: from-yaml\n", encoding="utf-8")
    settings = load_settings(config, environ={"XGW_PORT": "9002"})
    assert settings.port == 9002
    assert settings.node_id == "from-yaml"


def test_unknown_env_key_is_named() -> None:
    with pytest.raises(ConfigError, match="XGW_PROT"):
        load_settings(environ={"XGW_PROT": "1"})


def test_unknown_yaml_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "xgw.yaml"
    config.write_text("port: 9001\nredis_ur: redis://x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="'redis_ur'"):
        load_settings(config, environ={})


def test_invalid_value_names_key_and_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="XGW_PORT"):
        load_settings(environ={"XGW_PORT": "99999"})
    config = tmp_path / "xgw.yaml"
    config.write_text("region_code: '42060'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'region_code' in .*xgw.yaml"):
        load_settings(config, environ={})


def test_broken_yaml_gives_line(tmp_path: Path) -> None:
    config = tmp_path / "xgw.yaml"
    config.write_text("port: 1\nhost: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"xgw.yaml:\d+: not valid YAML"):
        load_settings(config, environ={})


def test_redis_url_must_be_redis_scheme() -> None:
    with pytest.raises(ConfigError, match="XGW_REDIS_URL"):
        load_settings(environ={"XGW_REDIS_URL": "http://127.0.0.1:6379"})


def test_effective_config_masks_secrets() -> None:
    settings = Settings.model_validate(
        {"redis_url": SecretStr("redis://gw:hunter2@10.0.0.5:6379/0")}
    )
    shown = effective_config(settings)
    assert "hunter2" not in str(shown)
    assert shown["redis_url"] == "redis://gw:***@10.0.0.5:6379/0"


def test_serve_with_bad_config_exits_with_one_line(tmp_path: Path) -> None:
    result = run_xgw("serve", env=xgw_env(tmp_path, XGW_PORT="not-a-port"))
    assert result.returncode != 0
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "XGW_PORT" in lines[0]


def test_config_show_prints_masked_json(tmp_path: Path) -> None:
    env = xgw_env(tmp_path, XGW_REDIS_URL="redis://:s3cret@127.0.0.1:6379/0")
    result = run_xgw("config", "show", env=env)
    assert result.returncode == 0, result.stderr
    assert b"s3cret" not in result.stdout
    assert b'"redis_url": "redis://:***@127.0.0.1:6379/0"' in result.stdout
