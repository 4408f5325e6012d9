"""A reward function written the way verl users write them, for the reward server tests.

compute_score follows verl's custom_reward_function contract: keyword arguments data_source,
solution_str, ground_truth, extra_info (a dict or None), returning a float or a dict with "score".
The data_source picks a behaviour, so one function covers every case the tests need.
"""
import os
import re
import time


def _last_number(text):
    numbers = re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", ""))
    return numbers[-1] if numbers else None


def compute_score(data_source, solution_str, ground_truth, extra_info=None, scale=1.0):
    if data_source == "test/raise":
        raise ValueError(f"cannot grade {solution_str!r}")
    if data_source == "test/hang":
        time.sleep(3600)
    if data_source == "test/crash":
        os._exit(7)
    if data_source == "test/bad_return":
        return "not a number"
    if data_source == "test/dict":
        answer = _last_number(solution_str)
        correct = answer is not None and float(answer) == float(ground_truth)
        return {"score": scale * float(correct), "acc": correct, "pred": answer,
                "split": (extra_info or {}).get("split", "none")}
    # GSM8K style: 1.0 correct, 0.1 an answer in the right format, 0 otherwise.
    answer = _last_number(solution_str.split("####")[-1]) if "####" in solution_str else None
    if answer is None:
        return 0.0
    return scale * (1.0 if float(answer) == float(ground_truth) else 0.1)
