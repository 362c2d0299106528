"""DIRAC's job description, as Ganga's job scripts build it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ... import S_OK

__all__ = ["Job"]


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(";") if part.strip()]
    return [str(item) for item in value]


class _Workflow:
    """The job's workflow: the parameters it carries."""

    def __init__(self) -> None:
        self.parameters: dict[str, Any] = {}


class Job:
    """A job description: name, executable, sandboxes, data, requirements and parameters.

    Setters DIRAC has and the simulated grid has no use for (sites, tags, priorities, ...)
    are accepted and kept as parameters, so any script Ganga writes runs unchanged.
    """

    def __init__(self, script: str | None = None, stdout: str = "std.out", stderr: str = "std.err") -> None:
        self.workflow = _Workflow()
        self.name = "Name"
        self.executable = ""
        self.arguments = ""
        self.log_file = ""
        self.environment: dict[str, str] = {}
        self.input_sandbox: list[str] = []
        self.output_sandbox: list[str] = [stdout, stderr]
        self.input_data: list[str] = []
        self.parametric_input_data: list[Any] = []
        self.output_data: list[str] = []

    def _addParameter(
        self, workflow: _Workflow, name: str, parameter_type: str, value: Any, description: str = ""
    ) -> None:
        """Add a parameter to the workflow (Ganga records its version this way)."""
        workflow.parameters[name] = value

    def setName(self, name: str) -> dict[str, Any]:
        """The job's name."""
        self.name = str(name)
        return S_OK()

    def setExecutable(self, executable: str, arguments: str = "", logFile: str = "", **_kwargs: Any) -> dict[str, Any]:
        """The program to run, its arguments, and the file its output goes to."""
        self.executable = str(executable)
        self.arguments = str(arguments or "")
        self.log_file = str(logFile or "")
        return S_OK()

    def setExecutionEnv(self, environment: dict[str, Any] | None) -> dict[str, Any]:
        """Environment variables for the executable."""
        self.environment = {str(k): str(v) for k, v in (environment or {}).items()}
        return S_OK()

    def setInputSandbox(self, files: Any) -> dict[str, Any]:
        """Local files sent with the job (``LFN:`` entries are grid files, not sent)."""
        self.input_sandbox = _as_list(files)
        return S_OK()

    def setOutputSandbox(self, files: Any) -> dict[str, Any]:
        """File names (patterns) brought back in the output sandbox."""
        self.output_sandbox = _as_list(files)
        return S_OK()

    def setInputData(self, lfns: Any) -> dict[str, Any]:
        """Grid files the job reads."""
        self.input_data = _as_list(lfns)
        return S_OK()

    def setParametricInputData(self, lfns: Any) -> dict[str, Any]:
        """Input data for a parametric (bulk) job."""
        self.parametric_input_data = list(lfns or [])
        return S_OK()

    def setOutputData(self, lfns: Any, outputSE: Any = None, outputPath: str = "") -> dict[str, Any]:
        """Files uploaded to grid storage when the job ends."""
        self.output_data = _as_list(lfns)
        return S_OK()

    def setNumberOfProcessors(
        self,
        numberOfProcessors: int | None = None,
        minNumberOfProcessors: int | None = None,
        maxNumberOfProcessors: int | None = None,
    ) -> dict[str, Any]:
        """Processors the job needs."""
        self.workflow.parameters["NumberOfProcessors"] = numberOfProcessors or minNumberOfProcessors or 1
        return S_OK()

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        # setCPUTime, setPlatform, setDestination, setBannedSites, setTag, setJobGroup, ...
        if not name.startswith("set") or len(name) <= 3:
            raise AttributeError(name)

        def setter(*args: Any, **kwargs: Any) -> dict[str, Any]:
            value: Any = args[0] if len(args) == 1 and not kwargs else {"args": list(args), **kwargs}
            self.workflow.parameters[name[3:]] = value
            return S_OK()

        return setter

    def description(self) -> dict[str, Any]:
        """What the service needs to run the job (the input sandbox still as local paths)."""
        parameters = {key: value for key, value in self.workflow.parameters.items() if _json_safe(value)}
        return {
            "name": self.name,
            "executable": self.executable,
            "arguments": self.arguments,
            "log_file": self.log_file,
            "environment": self.environment,
            "output_sandbox": self.output_sandbox,
            "parameters": parameters,
        }


def _json_safe(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | list | dict) or value is None
