"""sbx rollout runner: runs inside a sandbox of an execution pool.

The host loads this file as an interface (guest/rpc.py runs it once with
`expose` in its namespace). Loading imports the agent's entry point,
SBX_ROLLOUT_ENTRY ("module:function", default "agent:rollout"), from the
agent directory SBX_AGENT_DIR (default /app/agent), so a failed import
fails the load with its traceback. Each execution is then one call of
run(task, config), which calls the entry point as rollout(task, config)
(a coroutine function is awaited, on a fresh event loop) and returns

    {"code": null | "exception" | "not_json" | "bad_result",
     "result": {"success", "trajectories", "session_uid", "reward",
                "error", "elapsed"}}

the result being rLLM's six keys. What the entry point returns becomes
trajectories: a list (each item dumped with model_dump() when it has one,
dataclasses as dicts, dicts kept), a dict with "trajectories" (and maybe
"reward"), one trajectory (a dict or a model), a number (the reward alone)
or None. The reward is the one given, else the first trajectory's.

Run directly (python3 rollout.py < request.json, with "task" and "config"
in the request) it does the same once and prints the JSON.
"""
import asyncio
import dataclasses
import importlib
import inspect
import json
import os
import sys
import time
import traceback

ENTRY = os.environ.get("SBX_ROLLOUT_ENTRY") or "agent:rollout"
AGENT_DIR = os.environ.get("SBX_AGENT_DIR") or "/app/agent"


def load_entry(entry):
    module_name, _, func_name = entry.partition(":")
    func_name = func_name or "rollout"
    if AGENT_DIR not in sys.path:
        sys.path.insert(0, AGENT_DIR)
    module = importlib.import_module(module_name)
    func = getattr(module, func_name, None)
    if func is None:
        raise AttributeError("module '%s' has no function '%s'"
                             % (module_name, func_name))
    if not callable(func):
        raise TypeError("'%s' is not callable" % entry)
    return func


def dump(item):
    dumper = getattr(item, "model_dump", None)
    if callable(dumper):
        return dumper()
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    return item


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def shape(value):
    """(trajectories, reward) of what the entry point returned."""
    reward = None
    if value is None:
        return [], None
    if is_number(value):
        return [], value
    if isinstance(value, dict) and "trajectories" in value:
        reward = value.get("reward")
        value = value["trajectories"]
        if value is None:
            value = []
    if isinstance(value, (list, tuple)):
        trajs = [dump(t) for t in value]
    else:
        trajs = [dump(value)]
    if reward is None and trajs and isinstance(trajs[0], dict):
        r = trajs[0].get("reward")
        if is_number(r):
            reward = r
    return trajs, reward


def call(func, task, config):
    value = func(task, config)
    if inspect.isawaitable(value):
        async def wait():
            return await value
        value = asyncio.run(wait())
    return value


def run(task, config):
    """One rollout: the wrapped six-key result."""
    func = FUNC
    session_uid = str(config.get("session_uid") or "")
    start = time.monotonic()
    code = None
    try:
        value = call(func, task, config)
        trajs, reward = shape(value)
        result = {"success": True, "trajectories": trajs,
                  "session_uid": session_uid, "reward": reward,
                  "error": None}
    except BaseException:  # noqa: B902 - the agent's failure is data
        code = "exception"
        result = {"success": False, "trajectories": None,
                  "session_uid": session_uid, "reward": None,
                  "error": traceback.format_exc()}
    result["elapsed"] = time.monotonic() - start
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        code = "not_json"
        result = {"success": False, "trajectories": None,
                  "session_uid": session_uid, "reward": None,
                  "error": "the rollout returned something that is not "
                  "JSON-serialisable: %s: %s" % (type(e).__name__, e),
                  "elapsed": result["elapsed"]}
    return {"code": code, "result": result}


if "expose" in globals():
    # Loaded by the interface server: import the agent now, once.
    FUNC = load_entry(ENTRY)
    expose(run)  # noqa: F821 - given by the interface server
elif __name__ == "__main__":
    FUNC = load_entry(ENTRY)
    request = json.load(sys.stdin)
    out = run(request.get("task") or {}, request.get("config") or {})
    sys.stdout.write(json.dumps(out) + "\n")
