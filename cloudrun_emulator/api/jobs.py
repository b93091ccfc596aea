"""Jobs.* handlers."""

from __future__ import annotations

from google.cloud import run_v2
from google.longrunning import operations_pb2

from cloudrun_emulator.api.routing import JOB, LOC, Call, descriptor, route, unimplemented
from cloudrun_emulator.errors import invalid
from cloudrun_emulator.records import Wire
from cloudrun_emulator.service import CloudRunService


async def create_job(s: CloudRunService, c: Call) -> Wire:
    return s.create_job(*c.where, c.query.get("jobId", ""), c.body, c.flag("validateOnly"))


async def get_job(s: CloudRunService, c: Call) -> Wire:
    return s.get_job(*c.where, c.params["job"])


async def list_jobs(s: CloudRunService, c: Call) -> Wire:
    return s.list_jobs(*c.where, c.query.get("pageSize"), c.query.get("pageToken", ""))


async def update_job(s: CloudRunService, c: Call) -> Wire:
    p = c.params
    name = f"projects/{p['project']}/locations/{p['location']}/jobs/{p['job']}"
    if isinstance(c.body, dict) and c.body.get("name") not in (None, "", name):
        raise invalid("job.name", "the job name in the body does not match the URL")
    return s.update_job(*c.where, p["job"], c.body, c.flag("allowMissing"), c.flag("validateOnly"))


async def delete_job(s: CloudRunService, c: Call) -> Wire:
    return s.delete_job(*c.where, c.params["job"], c.query.get("etag", ""), c.flag("validateOnly"))


async def run_job(s: CloudRunService, c: Call) -> Wire:
    return s.run_job(*c.where, c.params["job"], c.body)


_OP = operations_pb2.Operation.DESCRIPTOR
ROUTES = [
    route("POST", LOC + r"/jobs", "Jobs.CreateJob", create_job, _OP, has_body=True),
    route("GET", LOC + r"/jobs", "Jobs.ListJobs", list_jobs, descriptor(run_v2.ListJobsResponse)),
    route("GET", JOB, "Jobs.GetJob", get_job, descriptor(run_v2.Job)),
    route("PATCH", JOB, "Jobs.UpdateJob", update_job, _OP, has_body=True),
    route("DELETE", JOB, "Jobs.DeleteJob", delete_job, _OP),
    route("POST", JOB + r":run", "Jobs.RunJob", run_job, _OP, has_body=True),
    route("GET", JOB + r":getIamPolicy", "Jobs.GetIamPolicy", unimplemented, None),
    route("POST", JOB + r":setIamPolicy", "Jobs.SetIamPolicy", unimplemented, None, has_body=True),
    route("POST", JOB + r":testIamPermissions", "Jobs.TestIamPermissions", unimplemented, None, has_body=True),
]
