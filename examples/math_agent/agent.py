"""A sample math agent for sbx executions (and rLLM's sandbox workers).

rollout(task, config) asks the model twice through the OpenAI-compatible
base URL it is given (sbx's gateway, carrying this execution's session),
checks the arithmetic itself, and returns one rLLM trajectory whose reward
says whether the task's target is right. Standard library only, so it runs
in any sandbox with python3.

    task   {"question": "What is 2 + 3?", "expression": "2 + 3", "target": 5}
    config {"base_url": ..., "session_uid": ..., "model_id": "mock-model"}
"""
import json
import re
import urllib.request

SYSTEM = "Solve the arithmetic. Put the result in <answer></answer>."
ALLOWED = re.compile(r"^[\d+\-*/().\s]+$")


def chat(base_url, model, messages):
    body = json.dumps({"model": model, "messages": messages,
                       "max_tokens": 8}).encode()
    req = urllib.request.Request(
        base_url.rstrip("/") + "/chat/completions", data=body,
        headers={"Content-Type": "application/json",
                 "Authorization": "Bearer sbx"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.load(resp)["choices"][0]["message"]["content"]


def evaluate(expression):
    if not ALLOWED.match(expression):
        raise ValueError("not arithmetic: %r" % expression)
    return eval(expression, {"__builtins__": {}}, {})  # digits and operators


def rollout(task, config):
    model = config.get("model_id") or "mock-model"
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": task["question"]}]
    first = chat(config["base_url"], model, messages)
    messages += [{"role": "assistant", "content": first},
                 {"role": "user", "content": "Check it once more."}]
    second = chat(config["base_url"], model, messages)
    value = evaluate(task["expression"])
    reward = 1.0 if abs(value - float(task["target"])) < 1e-6 else 0.0
    steps = [
        {"id": "draft", "input": messages[:2], "output": first,
         "action": None, "reward": 0.0, "done": False, "metadata": None},
        {"id": "check", "input": messages, "output": second,
         "action": value, "reward": reward, "done": True, "metadata": None},
    ]
    return [{"uid": config.get("session_uid"), "name": "solver",
             "task": task, "steps": steps, "reward": reward,
             "input": None, "output": None, "signals": {},
             "metadata": None}]
