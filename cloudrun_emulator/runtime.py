"""The task runtime: what a task attempt runs (a local command or a Docker container) and with what environment.

Cloud Run starts a container from the task's image; here the command comes from the container's ``command``,
from a local entrypoint given for the image, or from Docker. Secret values come from the emulator's own map.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from cloudrun_emulator.faults import FaultInjector
from cloudrun_emulator.logstore import LogStore
from cloudrun_emulator.processes import DockerProbe, LineSink, Outcome, ProcessGroups
from cloudrun_emulator.records import Container, EnvVar, Execution, Task
from cloudrun_emulator.simulated import SimulatedAttempts, parse_args
from cloudrun_emulator.volumes import GcsVolumes, MountError, Mounts

HOST_ENV_KEEP = ("PATH", "HOME", "LANG", "TMPDIR", "STORAGE_EMULATOR_HOST")


# How Cloud Run's container runtime words a container whose entrypoint cannot be run.
START_FAILED = "Application failed to start"


@dataclass(frozen=True)
class SetupError:
    """Why an attempt's container could not start; a retry cannot help. ``reason`` is a Condition.CommonReason
    name when one applies (SECRETS_ACCESS_CHECK_FAILED)."""

    message: str
    reason: str = ""


class TaskRuntime:
    """Runs task attempts as local process groups and writes their output to the log store; with ``simulate``
    (controller scale benchmarks only) no process starts and the arguments say what an attempt does."""

    def __init__(
        self,
        *,
        local_images: Mapping[str, list[str]],
        secrets: Mapping[str, str],
        use_docker: bool,
        faults: FaultInjector,
        logs: LogStore,
        kill_grace_seconds: float,
        simulate: bool = False,
        local_buckets: Mapping[str, str] | None = None,
    ) -> None:
        self.simulate = simulate
        self.volumes = GcsVolumes(local_buckets)
        self.simulated = SimulatedAttempts()
        self.local_images = dict(local_images)
        self.secrets = dict(secrets)
        self.use_docker = use_docker
        self.faults = faults
        self.logs = logs
        self.docker = DockerProbe()
        self.procs = ProcessGroups(kill_grace_seconds)
        self.attempts_started = 0
        self._host_env = {k: os.environ[k] for k in HOST_ENV_KEEP if k in os.environ}

    async def attempt(self, ex: Execution, task: Task, container: Container) -> Outcome | SetupError:
        """Run one attempt of a task to its end; a container that cannot start says why in the system log."""
        instance_id = uuid.uuid4().hex
        job = ex.job
        write = self.logs.write

        def on_line(stream: str, line: str) -> None:
            write(
                project=job.project,
                region=job.location,
                job=job.job_id,
                execution=ex.exec_id,
                task_index=task.index,
                attempt=task.attempt,
                instance_id=instance_id,
                stream=stream,
                line=line,
            )

        outcome = await self._attempt(ex, task, container, on_line)
        if isinstance(outcome, SetupError):
            on_line("varlog/system", outcome.message)
        elif outcome.exit_code and not outcome.timed_out and not outcome.killed_by_request:
            on_line("varlog/system", f"Container called exit({outcome.exit_code}).")
        return outcome

    async def _attempt(
        self, ex: Execution, task: Task, container: Container, on_line: LineSink
    ) -> Outcome | SetupError:
        env = self._env(ex, task, container)
        if isinstance(env, SetupError):
            return env
        if self.simulate:
            return await self._simulated(ex, task, container, on_line)
        volumes, wanted = ex.template.gcs_volumes, container.volume_mounts
        try:  # Cloud Storage reads and folder copies run off the event loop
            mounts = await asyncio.to_thread(self.volumes.mount, volumes, wanted) if volumes else self.volumes.none()
        except MountError as exc:
            return SetupError(f"{START_FAILED}: {exc}.")
        try:
            return await self._run(ex, task, container, env, mounts, on_line)
        finally:
            if mounts.mounts:
                for problem in await asyncio.to_thread(mounts.close):
                    on_line("varlog/system", problem)

    async def _run(
        self, ex: Execution, task: Task, container: Container, env: dict[str, str], mounts: Mounts, on_line: LineSink
    ) -> Outcome | SetupError:
        docker_name = f"cloudrun-emulator-{ex.exec_id}-{task.index}-{task.attempt}"
        if delay := self.faults.task_start_delay():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ex.cancel_event.wait(), delay)
        argv = await self._argv(container, env, docker_name, mounts)
        if isinstance(argv, SetupError):
            return argv
        if ex.cancelling:  # cancelled while the container was starting: stop() found no process to stop
            return Outcome(exit_code=128 + signal.SIGTERM, killed_by_request=True)
        if argv[0] != "docker":  # a local process sees each mount path as the mount's local folder
            argv = [mounts.local_path(arg) for arg in argv]
            env = {name: mounts.local_path(value) for name, value in env.items()}

        cwd = container.working_dir if container.working_dir and os.path.isdir(container.working_dir) else None
        self.attempts_started += 1

        def started(pid: int) -> None:
            task.pid = pid
            if ex.cancelling:  # cancelled while the process was being created
                self.stop(task)

        timeout = ex.template.timeout_seconds
        try:
            outcome = await self.procs.run(
                argv, env, cwd, timeout, on_line, kill_after=self.faults.task_kill_delay(), on_start=started
            )
        except OSError as exc:
            return SetupError(f"{START_FAILED}: cannot run {argv[0]!r}: {exc.strerror or exc}.")
        except ValueError as exc:
            # subprocess refuses what no exec can take, e.g. a NUL byte inside an argument.
            return SetupError(f"{START_FAILED}: the command line cannot be executed: {exc}.")
        finally:
            task.pid = None
        if argv[0] == "docker" and (outcome.timed_out or outcome.killed_by_request or outcome.exit_code):
            await _docker_rm(docker_name)
        return outcome

    async def _simulated(
        self, ex: Execution, task: Task, container: Container, on_line: LineSink
    ) -> Outcome | SetupError:
        """A simulated attempt (see cloudrun_emulator.simulated): no process, the same log entries."""
        command = parse_args(container.args)
        if isinstance(command, str):
            return SetupError(f"{START_FAILED}: {command}.")
        self.attempts_started += 1
        return await self.simulated.run(task.name, command, ex.template.timeout_seconds, on_line)

    def _env(self, ex: Execution, task: Task, container: Container) -> dict[str, str] | SetupError:
        env = dict(self._host_env)
        for var in container.env:
            value = self._value(var)
            if isinstance(value, SetupError):
                return value
            env[var.name] = value
        env.update(
            CLOUD_RUN_JOB=ex.job.job_id,
            CLOUD_RUN_EXECUTION=ex.exec_id,
            CLOUD_RUN_TASK_INDEX=str(task.index),
            CLOUD_RUN_TASK_COUNT=str(ex.task_count),
            CLOUD_RUN_TASK_ATTEMPT=str(task.attempt),
        )
        return env

    def _value(self, var: EnvVar) -> str | SetupError:
        ref = var.secret
        if ref is None:
            return var.value
        short = ref.secret.rsplit("/", 1)[-1]
        for key in (
            f"{ref.secret}/versions/{ref.version}",
            f"{short}/versions/{ref.version}",
            f"{short}:{ref.version}",
            ref.secret,
            short,
        ):
            if key in self.secrets:
                return self.secrets[key]
        return SetupError(
            f"Secret '{ref.secret}' version {ref.version} (environment variable {var.name}) was not found: it has "
            "no local value. Give the emulator its value: Emulator(secrets={'NAME': 'value'}) or "
            "`fanout emulator --secret NAME=VALUE`.",
            reason="SECRETS_ACCESS_CHECK_FAILED",
        )

    async def _argv(
        self, container: Container, env: Mapping[str, str], docker_name: str, mounts: Mounts
    ) -> list[str] | SetupError:
        image = container.image
        if container.command:
            return [*container.command, *container.args]
        if image in self.local_images:
            return [*self.local_images[image], *container.args]
        if self.use_docker and await self.docker.available():
            passed = [item for name in env if name not in self._host_env for item in ("-e", name)]
            volumes = mounts.docker_args()
            return ["docker", "run", "--rm", "--name", docker_name, *passed, *volumes, image, *container.args]
        return SetupError(
            f"{START_FAILED}: image '{image}' has no command and no local entrypoint, so the emulator cannot tell "
            "what it runs. Set the container's command, map the image to a local command "
            f"(Emulator(local_images={{'{image}': ['python', 'main.py']}}), `fanout emulator --image "
            f"{image}=CMD`, or `local.entrypoint` in the job's job.yaml), or enable Docker "
            "(use_docker=True / --docker) with a reachable engine."
        )

    def stop(self, task: Task) -> None:
        """Stop a running attempt as Cloud Run stops a container (SIGTERM, then SIGKILL)."""
        if task.pid is not None:
            asyncio.get_running_loop().create_task(self.procs.stop(task.pid))
        self.simulated.stop(task.name)

    def kill_all(self) -> None:
        self.procs.kill_all()
        self.simulated.stop_all()


async def _docker_rm(name: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "docker", "rm", "-f", name, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await asyncio.wait_for(proc.wait(), 10.0)
    except TimeoutError:
        proc.kill()
        await proc.wait()
