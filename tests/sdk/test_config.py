"""Base URL and credentials from arguments or the environment; contradictions refused without echoing a secret."""

from __future__ import annotations

import pytest

from keyrelay_client import ConfigurationError
from keyrelay_client.config import ClientCredentials, StaticToken, check_url, resolve

URL = "http://127.0.0.1:8080"
SECRET = "krs_super-secret-value"


def test_arguments_win_over_the_environment() -> None:
    env = {"KEYRELAY_URL": "http://other:1", "KEYRELAY_API_KEY": "kr_from_env"}
    cfg = resolve(URL, token="krw_given", env=env)
    assert str(cfg.base_url) == URL
    assert cfg.credential == StaticToken("token", "krw_given")


@pytest.mark.parametrize(("env", "expected"), [
    ({"KEYRELAY_CLIENT_ID": "kr_app_1", "KEYRELAY_CLIENT_SECRET": SECRET}, ClientCredentials("kr_app_1", SECRET)),
    ({"KEYRELAY_API_KEY": "kr_abc"}, StaticToken("api_key", "kr_abc")),
    ({"KEYRELAY_TOKEN": "krw_abc"}, StaticToken("token", "krw_abc")),
])
def test_each_kind_of_credential_is_read_from_the_environment(env: dict[str, str], expected: object) -> None:
    cfg = resolve(env={"KEYRELAY_URL": URL + "/", **env})
    assert cfg.credential == expected
    assert str(cfg.base_url) == URL  # trailing slash dropped


def test_a_missing_half_of_a_client_pair_comes_from_the_environment() -> None:
    cfg = resolve(URL, client_id="kr_app_2", env={"KEYRELAY_CLIENT_SECRET": SECRET})
    assert cfg.credential == ClientCredentials("kr_app_2", SECRET)


@pytest.mark.parametrize(("kwargs", "env", "message"), [
    ({}, {"KEYRELAY_API_KEY": "kr_x"}, "No keyrelay URL"),
    ({"base_url": URL}, {}, "No credentials"),
    ({"base_url": URL}, {"KEYRELAY_API_KEY": "kr_x", "KEYRELAY_TOKEN": "krw_" + SECRET},
     "More than one kind of credential in the environment (KEYRELAY_API_KEY, KEYRELAY_TOKEN)"),
    ({"base_url": URL, "api_key": "kr_x", "token": "krw_" + SECRET}, {}, "Pass one kind of credential"),
    ({"base_url": URL, "client_id": "kr_app_1"}, {}, "need both client_id and client_secret"),
    ({"base_url": URL, "api_key": SECRET}, {}, "api_key is not a keyrelay API key"),
    ({"base_url": "ftp://host", "api_key": "kr_x"}, {}, "must be an http:// or https:// URL"),
    ({"base_url": "http://user:" + SECRET + "@host", "api_key": "kr_x"}, {}, "may not contain credentials"),
    ({"base_url": "http://host/?token=" + SECRET, "api_key": "kr_x"}, {}, "may not contain credentials"),
])
def test_bad_configurations_are_refused_without_echoing_secrets(kwargs: dict[str, str], env: dict[str, str],
                                                                message: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        resolve(env=env, **kwargs)
    assert message in str(err.value)
    assert SECRET not in str(err.value)


def test_os_environ_is_read_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYRELAY_URL", "https://kr.example.com/base/")
    monkeypatch.setenv("KEYRELAY_API_KEY", "kr_env_key")
    for name in ("KEYRELAY_CLIENT_ID", "KEYRELAY_CLIENT_SECRET", "KEYRELAY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    cfg = resolve()
    assert str(cfg.base_url) == "https://kr.example.com/base"
    assert cfg.credential == StaticToken("api_key", "kr_env_key")


def test_credential_reprs_hide_secrets() -> None:
    assert SECRET not in repr(ClientCredentials("kr_app_1", SECRET))
    assert "kr_app_1" in repr(ClientCredentials("kr_app_1", SECRET))
    assert SECRET not in repr(StaticToken("token", SECRET))


def test_check_url_keeps_a_path_prefix() -> None:
    assert str(check_url(" https://gw.example.com/keyrelay// ")) == "https://gw.example.com/keyrelay"
