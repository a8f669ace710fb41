#!/usr/bin/env python3
"""A worker command for Tether: tether worker --exec 'python3 docs/examples/worker.py'"""
import json
import sys

def emit(kind, step=None, **data):
    event = {"type": kind, "data": data}
    if step:
        event["step"] = step
    print(json.dumps(event), flush=True)

task = json.loads(sys.stdin.readline())  # first stdin line: the task
print("starting: " + task["description"], flush=True)  # a plain line: a log event
emit("step_started", step="work")
emit("agent_turn", step="work", turn=1)
emit("agent_tool_call", step="work", tool_name="bash", tool_input_preview="ls")
emit("agent_tool_result", step="work", tool_name="bash", ok=True, output_preview="README.md")
emit("agent_cost_update", step="work", total_cost_usd=0.0021, input_tokens=1200, output_tokens=80)
emit("agent_milestone", step="work", milestone="listed the repository")
emit("step_completed", step="work", files=1)  # data: the step's checkpoint
emit("result", files=1)  # the task's result
sys.exit(0)  # 0 completes the task; n fails it with EXIT_n
