"""A thin wrapper over the Label Studio SDK 2.x (``label_studio_sdk.LabelStudio``).

Every call goes through ``_call``, which turns transport failures and refused tokens into a
``LabelStudioError`` (an AirwattError: the CLI prints one line and exits 2) that names the URL and what to
check. The token comes only from the environment (``token_from_env``), never from params.yaml.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from airwatt.errors import AirwattError, ConfigError

if TYPE_CHECKING:
    from label_studio_sdk import ImportApiRequest
    from label_studio_sdk.types.all_roles_project_list import AllRolesProjectList
    from label_studio_sdk.types.role_based_task import RoleBasedTask

log = logging.getLogger(__name__)

TOKEN_VARIABLES = ("AIRWATT_LABEL_STUDIO_TOKEN", "LABEL_STUDIO_API_KEY")
PAGE_SIZE = 500
EXPORT_BATCH = 200  # tasks per export request: each carries its 12 h of readings (~100 kB)
T = TypeVar("T")


class LabelStudioError(AirwattError):
    """Label Studio unreachable, the token refused, or a request rejected."""


def token_from_env() -> str:
    """The API token: AIRWATT_LABEL_STUDIO_TOKEN, else LABEL_STUDIO_API_KEY (legacy token or personal access
    token; the SDK exchanges a personal access token for short-lived access tokens itself)."""
    for name in TOKEN_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    raise ConfigError(
        f"no Label Studio API token: set {' or '.join(TOKEN_VARIABLES)} "
        "(Label Studio: Account & Settings -> Personal Access Token)"
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _annotation(a: dict[str, Any]) -> dict[str, Any]:
    """An exported annotation as the annotations API gives it: ``completed_by`` is the user's id."""
    by = a.get("completed_by")
    return {**a, "completed_by": by.get("id") if isinstance(by, dict) else by}


@dataclass(frozen=True)
class Project:
    id: int
    title: str
    label_config: str


class LabelStudioClient:
    """The few Label Studio calls the round trip needs."""

    def __init__(self, url: str, token: str, *, timeout_s: float = 120.0) -> None:
        from label_studio_sdk import LabelStudio

        self.url = url.rstrip("/")
        self._sdk = LabelStudio(base_url=self.url, api_key=token, timeout=timeout_s)

    # ---- error mapping -------------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        try:
            return fn()
        except httpx.TransportError as e:
            raise LabelStudioError(
                f"cannot reach Label Studio at {self.url} while trying to {what} ({type(e).__name__}: "
                f"{_first_line(e)}); check that the server runs there (label.url in params.yaml, or --url)"
            ) from None
        except ApiError as e:
            if e.status_code in (401, 403):
                raise LabelStudioError(
                    f"Label Studio at {self.url} refused the token (HTTP {e.status_code}) while trying to "
                    f"{what}; check {' / '.join(TOKEN_VARIABLES)}: a personal access token, or a legacy "
                    "token with legacy tokens enabled on the server "
                    "(LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true "
                    "since 1.23)"
                ) from None
            raise LabelStudioError(
                f"Label Studio at {self.url} answered HTTP {e.status_code} while trying to {what}: "
                f"{_first_line(e)[:500]}"
            ) from None

    def check(self) -> None:
        """Fail early, with a clear message, when the server is unreachable or the token is refused."""
        self._call("check the token", lambda: self._sdk.users.whoami())

    # ---- projects ------------------------------------------------------------------------------------
    def find_project(self, title: str) -> Project | None:
        """The project with exactly this title (the lowest id if several), or None."""

        def fetch() -> list[AllRolesProjectList]:
            # SDK 2.1.2 types the extension's pager as SyncPagerExt[T] with T unbound; its items are the
            # ProjectsClient.list items.
            pager = cast("Iterable[AllRolesProjectList]", self._sdk.projects.list(title=title))
            return list(pager)

        found = self._call("list projects", fetch)
        # The server always sends a project's id; the SDK types it Optional (read-only in the schema).
        matches = sorted((p for p in found if p.title == title), key=lambda p: cast(int, p.id))
        if not matches:
            return None
        return self.get_project(cast(int, matches[0].id))

    def get_project(self, project_id: int) -> Project:
        p = self._call(f"read project {project_id}", lambda: self._sdk.projects.get(project_id))
        return Project(id=int(cast(int, p.id)), title=str(p.title), label_config=str(p.label_config or ""))

    def create_project(self, title: str, label_config: str, description: str) -> Project:
        p = self._call(
            f"create project {title!r}",
            lambda: self._sdk.projects.create(
                title=title, label_config=label_config, description=description
            ),
        )
        return self.get_project(int(cast(int, p.id)))

    def update_project(self, project_id: int, label_config: str, description: str) -> Project:
        self._call(
            f"update project {project_id}",
            lambda: self._sdk.projects.update(project_id, label_config=label_config, description=description),
        )
        return self.get_project(project_id)

    # ---- tasks ---------------------------------------------------------------------------------------
    def task_summaries(self, project_id: int) -> list[dict[str, Any]]:
        """Every task of the project as {id, meta, annotations: [{id}], predictions: [...],
        cancelled_annotations: count}, without the heavy task data."""

        def fetch() -> list[dict[str, Any]]:
            # SDK 2.1.2 types the extension's pager as SyncPagerExt[T] with T unbound; its items are the
            # TasksClient.list items.
            pager = cast(
                "Iterable[RoleBasedTask]",
                self._sdk.tasks.list(
                    project=project_id,
                    fields="all",
                    include="id,meta,annotations,predictions,cancelled_annotations",
                    page_size=PAGE_SIZE,
                ),
            )
            keep = {"id", "meta", "annotations", "predictions", "cancelled_annotations"}
            return [t.model_dump(include=keep) for t in pager]

        return self._call(f"list the tasks of project {project_id}", fetch)

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Import tasks (with their predictions) in one request; returns the new task ids."""
        # The SDK serialises the request as JSON and sends plain task dicts as they are.
        request = cast("Sequence[ImportApiRequest]", tasks)
        r = self._call(
            f"import {len(tasks)} tasks into project {project_id}",
            lambda: self._sdk.projects.import_tasks(project_id, request=request, return_task_ids=True),
        )
        # ImportTasksProjectsResponse has no task_ids field: with return_task_ids the server adds it, and the
        # model (extra="allow") keeps it among its extra fields.
        ids = list((r.model_extra or {}).get("task_ids") or [])
        if len(ids) != len(tasks):
            raise LabelStudioError(
                f"Label Studio at {self.url} imported {len(ids)} of {len(tasks)} tasks "
                f"into project {project_id}"
            )
        return [int(i) for i in ids]

    def annotations(self, project_id: int, task_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
        """Task id -> its annotations (result, completed_by, was_cancelled, ground_truth, updated_at),
        cancelled ones included, from the project's JSON export: one request per ``EXPORT_BATCH`` tasks, not
        one per task. The export also carries each task's data (its readings), hence the batches."""
        out: dict[int, list[dict[str, Any]]] = {}
        ids = [str(i) for i in task_ids]
        for lo in range(0, len(ids), EXPORT_BATCH):
            chunk = ids[lo : lo + EXPORT_BATCH]
            raw = self._call(
                f"export the annotations of {len(chunk)} tasks of project {project_id}",
                lambda chunk=chunk: b"".join(  # type: ignore[misc]
                    self._sdk.projects.exports.download_sync(
                        project_id, export_type="JSON", download_all_tasks=True, ids=chunk
                    )
                ),
            )
            try:
                exported = json.loads(raw)
            except ValueError as e:
                raise LabelStudioError(
                    f"Label Studio at {self.url} sent an export of project {project_id} that is not JSON "
                    f"({e})"
                ) from None
            for task in exported:
                out[int(task["id"])] = [_annotation(a) for a in task.get("annotations") or []]
        missing = [i for i in task_ids if int(i) not in out]
        if missing:
            raise LabelStudioError(
                f"Label Studio at {self.url}: the export of project {project_id} lacks tasks {missing[:10]}"
            )
        return out

    def users(self) -> dict[int, str]:
        """User id -> e-mail (the annotator id written to labels.parquet)."""
        found: Iterable[Any] = self._call("list users", lambda: list(self._sdk.users.list()))
        return {int(u.id): str(u.email or u.username or f"ls-user-{u.id}") for u in found}

    def create_annotation(self, task_id: int, result: list[dict[str, Any]], **kwargs: Any) -> int:
        """An annotation as a labeler's client would make it (tests, scripted labeling)."""
        a = self._call(
            f"annotate task {task_id}",
            lambda: self._sdk.annotations.create(task_id, result=result, **kwargs),
        )
        return int(a.id)

    def delete_task(self, task_id: int) -> None:
        self._call(f"delete task {task_id}", lambda: self._sdk.tasks.delete(str(task_id)))
