#!/usr/bin/env python3
"""Checks the deployment templates under deploy/ against the product they launch.

Every Kubernetes manifest must parse and name apiVersion, kind and metadata.name; every `tandem`
invocation in a manifest or Slurm script must use a subcommand and flags that the built binary
accepts (from its --help), config files that exist under configs/, and run-config overrides whose
keys are documented in docs/rl.md or docs/training.md. Slurm scripts must pass `bash -n`.

  check_deploy.py <repo root> <path to the tandem binary>
"""
import pathlib
import re
import subprocess
import sys

import yaml

SUBCOMMANDS = {"init-model", "logprobs", "generate", "sft", "train", "rollout"}


def fail(errors, where, what):
    errors.append(f"{where}: {what}")


def help_flags(tandem, words, cache):
    key = tuple(words)
    if key not in cache:
        out = subprocess.run([tandem, *words, "--help"], capture_output=True, text=True)
        if out.returncode != 0:
            cache[key] = None
        else:
            cache[key] = set(re.findall(r"(--[a-z][a-z0-9-]*)", out.stdout))
    return cache[key]


def documented_keys(root):
    keys = set()
    for doc in ("docs/rl.md", "docs/training.md"):
        keys.update(re.findall(r"`([a-z_]+\.[a-z_.]+)`", (root / doc).read_text()))
    return keys


def check_invocation(args, where, ctx, errors):
    """args: the words after `tandem`."""
    root, tandem, cache, keys = ctx
    if not args or args[0] not in SUBCOMMANDS:
        fail(errors, where, f"unknown tandem subcommand in {args[:2]}")
        return
    words = args[:2] if args[0] == "rollout" else args[:1]
    flags = help_flags(tandem, words, cache)
    if flags is None:
        fail(errors, where, f"`tandem {' '.join(words)} --help` failed")
        return
    rest = args[len(words):]
    for i, word in enumerate(rest):
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            if flag not in flags:
                fail(errors, where, f"tandem {' '.join(words)}: unknown flag {flag}")
            if flag == "--config" and i + 1 < len(rest):
                path = rest[i + 1]
                if path.startswith("/opt/tandem/"):
                    path = path[len("/opt/tandem/"):]
                if not path.startswith("$") and not (root / path).is_file():
                    fail(errors, where, f"--config {rest[i + 1]}: no such file in the repository")
        elif re.match(r"^[a-z_]+(\.[a-z_]+)+=", word) and args[0] in ("train", "sft"):
            key = word.split("=", 1)[0]
            if key not in keys:
                fail(errors, where, f"override {key}: not a documented run-config key")


def containers(doc):
    spec = doc.get("spec") or {}
    templates = [spec.get("template")]
    for replica in (spec.get("mpiReplicaSpecs") or {}).values():
        templates.append(replica.get("template"))
    for template in templates:
        pod = (template or {}).get("spec") or {}
        yield from pod.get("initContainers") or []
        yield from pod.get("containers") or []


def check_manifests(ctx, errors):
    root = ctx[0]
    for path in sorted((root / "deploy/k8s").rglob("*.yaml")):
        where = str(path.relative_to(root))
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            fail(errors, where, f"not valid YAML: {e}")
            continue
        for doc in docs:
            if not all(k in doc for k in ("apiVersion", "kind")):
                fail(errors, where, "expected apiVersion and kind")
                continue
            if doc["kind"] != "Kustomization" and "name" not in (doc.get("metadata") or {}):
                fail(errors, where, "expected metadata.name")
            for c in containers(doc):
                words = [str(w) for w in (c.get("command") or []) + (c.get("args") or [])]
                if c.get("image") == "tandem" and not c.get("command"):
                    check_invocation(words, f"{where} ({c['name']})", ctx, errors)
                elif "tandem" in words:
                    check_invocation(words[words.index("tandem") + 1:], where, ctx, errors)
            for res in doc.get("resources") or []:
                if not (path.parent / res).exists():
                    fail(errors, where, f"resource {res} does not exist")


def check_slurm(ctx, errors):
    root = ctx[0]
    for path in sorted((root / "deploy/slurm").glob("*.sbatch")):
        where = str(path.relative_to(root))
        if subprocess.run(["bash", "-n", str(path)]).returncode != 0:
            fail(errors, where, "bash -n failed")
        # Join continuation lines, then read every "$TANDEM" ... command.
        text = path.read_text().replace("\\\n", " ")
        for default in re.findall(r":-(configs/[^}]+)}", text):
            if not (root / default).is_file():
                fail(errors, where, f"default {default}: no such file in the repository")
        for line in text.splitlines():
            if '"$TANDEM"' not in line or line.lstrip().startswith("#"):
                continue
            tail = line.split('"$TANDEM"', 1)[1].split(">")[0].split("&")[0]
            words = [w.strip('"') for w in tail.split()]
            check_invocation(words, where, ctx, errors)


def main():
    root, tandem = pathlib.Path(sys.argv[1]), sys.argv[2]
    ctx = (root, tandem, {}, documented_keys(root))
    errors = []
    check_manifests(ctx, errors)
    check_slurm(ctx, errors)
    for e in errors:
        print(e, file=sys.stderr)
    checked = len(list((root / "deploy").rglob("*.yaml"))) + len(
        list((root / "deploy").rglob("*.sbatch")))
    print(f"check_deploy: {checked} files, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
