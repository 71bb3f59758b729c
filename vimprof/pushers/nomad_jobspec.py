"""The user's own workload as the instance of a Nomad campaign (`vimprof capture --job FILE`).

The jobspec (HCL2, or JSON in the API's shape: {"Job": {...}} or the job itself) is parsed by
the cluster itself (POST /v1/jobs/parse, so its HCL2 functions and defaults are the cluster's
own), then each run registers a copy renamed `vimprof-LABEL-CAMPAIGN-NNNN` and tagged with
vimprof's meta key (for leftovers). One run measures one allocation: a jobspec with several task
groups or a count above 1 is refused unless `group` names the task group whose allocation is
the instance (that group's count must be 1; the others run beside it).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from vimprof.errors import VimprofError
from vimprof.pushers.nomad_access import ClusterAccess

META_KEY, META_VALUE = "vimprof", "1"
ONE_INSTANCE_TYPES = ("service", "batch")  # system/sysbatch place one allocation per node


@dataclass(frozen=True)
class UserJob:
    """A parsed jobspec (API JSON) and the task group whose allocation is the instance."""

    template: dict[str, Any]
    group: str | None
    source: str  # the file it came from

    def job(self, job_id: str) -> dict[str, Any]:
        """The jobspec for one run: renamed `job_id`, tagged for leftovers."""
        job = copy.deepcopy(self.template)
        job["ID"] = job["Name"] = job_id
        job["Meta"] = {**(job.get("Meta") or {}), META_KEY: META_VALUE}
        job.pop("ParentID", None)
        return job


def load(path: Path, access: ClusterAccess, group: str | None = None) -> UserJob:
    """Parse `path` (HCL2 through the cluster, or JSON) and check it measures one allocation.

    Raises VimprofError for a file that is missing or does not parse (with the parser's own
    message), a system/sysbatch job, or several task groups / a count above 1 without `group`.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise VimprofError(f"cannot read the jobspec {path}: {exc.strerror}") from None
    if path.suffix == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise VimprofError(f"{path} is not valid JSON: {exc}") from None
        job = data.get("Job", data) if isinstance(data, dict) else None
        if not isinstance(job, dict) or "TaskGroups" not in job:
            raise VimprofError(f"{path} is not a Nomad API job (no TaskGroups): export one with "
                               "`nomad job run -output JOBFILE`")
    else:
        job = _parse_hcl(text, path, access)
    return UserJob(template=job, group=_check_groups(job, path, group), source=str(path))


def _parse_hcl(text: str, path: Path, access: ClusterAccess) -> dict[str, Any]:
    try:
        r = access.session().post(f"{access.addr}/v1/jobs/parse", timeout=10,
                                  json={"JobHCL": text, "Canonicalize": True})
    except requests.RequestException as exc:
        raise VimprofError(f"cannot reach {access.addr} to parse {path}: "
                           f"{type(exc).__name__}") from None
    if r.status_code == 403:
        raise VimprofError(f"the token may not parse jobs (parse-job or submit-job) at "
                           f"{access.addr}, so {path} cannot be read")
    if r.status_code != 200:
        msg = " ".join(r.text.split())[:300]
        raise VimprofError(f"{path} does not parse: {msg}")
    return r.json()


def _check_groups(job: dict[str, Any], path: Path, group: str | None) -> str | None:
    kind = job.get("Type") or "service"
    if kind not in ONE_INSTANCE_TYPES:
        kinds = " or ".join(ONE_INSTANCE_TYPES)
        raise VimprofError(f"{path} is a {kind} job (one allocation per node): vimprof "
                           f"measures one allocation per run; use a {kinds} job")
    groups = {g.get("Name"): g.get("Count", 1) for g in job.get("TaskGroups") or []}
    if not groups:
        raise VimprofError(f"{path} has no task group")
    if group is not None:
        if group not in groups:
            raise VimprofError(f"{path} has no task group {group!r} (it has "
                               f"{', '.join(map(str, groups))})")
        if groups[group] != 1:
            raise VimprofError(f"task group {group!r} of {path} has count {groups[group]}: the "
                               "measured group must have count 1")
        return group
    if len(groups) > 1 or next(iter(groups.values())) != 1:
        shape = ", ".join(f"{g} (count {c})" for g, c in groups.items())
        raise VimprofError(f"{path} makes more than one allocation per run ({shape}): pass "
                           "--job-group NAME to measure that group's allocation (count 1)")
    return None
