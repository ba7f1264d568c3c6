"""A small client for the Kafka Connect REST API (the endpoints the platform uses).

Every failure raises `ConnectError` with the method, the URL path, the HTTP status and the
worker's own message (Connect answers errors as ``{"error_code": ..., "message": ...}``), or,
when the worker cannot be reached at all, the transport error and a hint.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

__all__ = ["ConnectError", "KafkaConnectClient"]

_UNREACHABLE_HINT = (
    "Is the Connect worker running (`ys-platform local up`) and YS_CONNECT_URL right?"
)


class ConnectError(RuntimeError):
    """A Kafka Connect REST call failed. ``status`` is None when no HTTP answer came back."""

    def __init__(self, message: str, *, method: str, path: str, status: int | None) -> None:
        super().__init__(message)
        self.method = method
        self.path = path
        self.status = status


def _segment(name: str) -> str:
    # Connector names may contain '/', spaces, ...: they are one path segment each.
    return quote(name, safe="")


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return response.text.strip()[:500]  # bounded: an HTML error page is not a message


class KafkaConnectClient:
    """Kafka Connect REST client over httpx. Use as a context manager, or call `close`."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"The Kafka Connect URL must start with http:// or https://, not {base_url!r}."
            )
        if timeout_s <= 0:
            raise ValueError(f"The Kafka Connect timeout must be positive, not {timeout_s}.")
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

    def __enter__(self) -> KafkaConnectClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- transport -------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise ConnectError(
                f"Kafka Connect {method} {path} at {self.base_url} failed without an answer "
                f"({type(exc).__name__}: {exc}). {_UNREACHABLE_HINT}",
                method=method,
                path=path,
                status=None,
            ) from exc
        if response.is_error:
            raise ConnectError(
                f"Kafka Connect {method} {path} at {self.base_url} answered HTTP "
                f"{response.status_code}: {_server_message(response)}",
                method=method,
                path=path,
                status=response.status_code,
            )
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if not response.content:  # 202/204 answers often have no body
            return None
        try:
            return response.json()
        except ValueError:
            raise ConnectError(
                f"Kafka Connect {method} {path} at {self.base_url} answered HTTP "
                f"{response.status_code} with a body that is not JSON.",
                method=method,
                path=path,
                status=response.status_code,
            ) from None

    # --- endpoints -------------------------------------------------------------------------------
    def list_connectors(self) -> list[str]:
        return list(self._json("GET", "/connectors") or [])

    def get_config(self, name: str) -> dict[str, str]:
        return dict(self._json("GET", f"/connectors/{_segment(name)}/config"))

    def put_config(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """Create or update a connector; returns Connect's ``{name, config, tasks, type}``."""
        return dict(self._json("PUT", f"/connectors/{_segment(name)}/config", json=config))

    def status(self, name: str) -> dict[str, Any]:
        """``{name, connector: {state, worker_id}, tasks: [{id, state, trace?}], type}``."""
        return dict(self._json("GET", f"/connectors/{_segment(name)}/status"))

    def pause(self, name: str) -> None:
        self._request("PUT", f"/connectors/{_segment(name)}/pause")

    def resume(self, name: str) -> None:
        self._request("PUT", f"/connectors/{_segment(name)}/resume")

    def restart(
        self, name: str, include_tasks: bool = True, only_failed: bool = True
    ) -> dict[str, Any] | None:
        """Restart the connector (and, by default, its failed tasks).

        Returns the status Connect answers with (202), or None when it restarts the connector
        alone and answers 204.
        """
        params = {
            "includeTasks": str(include_tasks).lower(),
            "onlyFailed": str(only_failed).lower(),
        }
        return self._json("POST", f"/connectors/{_segment(name)}/restart", params=params)

    def restart_task(self, name: str, task_id: int) -> None:
        self._request("POST", f"/connectors/{_segment(name)}/tasks/{int(task_id)}/restart")

    def delete(self, name: str) -> None:
        self._request("DELETE", f"/connectors/{_segment(name)}")

    def plugins(self) -> list[dict[str, Any]]:
        """Installed connector plugins: ``[{class, type, version}]``."""
        return list(self._json("GET", "/connector-plugins") or [])

    def is_ready(self) -> bool:
        """Whether the worker is up and has joined its group (never raises).

        ``GET /health`` (Kafka 3.9+, KIP-1017) answers 200 only once the worker is ready, and 503
        while it starts; an older worker without it answers 404, so fall back to ``GET /``.
        """
        try:
            response = self._http.get("/health")
            if response.status_code == httpx.codes.NOT_FOUND:
                response = self._http.get("/")
        except httpx.HTTPError:
            return False
        return response.status_code == httpx.codes.OK
