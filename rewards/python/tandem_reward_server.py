#!/usr/bin/env python3
"""tandem_reward_server: serve any verl-style reward function over tandem.v1.RewardService.

    python3 tandem_reward_server.py --port 50051 path/to/reward.py:compute_score \
        [--workers K] [--timeout S] [--reward-kwargs JSON]

The function is called exactly as verl calls it,
    compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=..., **kwargs)
and may return a number or a dict with "score" (other numeric entries become metrics, the rest
extras), so existing verl reward code runs unchanged. Items are scored in K worker processes with a
per-item time limit; an exception, crash or hang fails that item only (reward_workers.py).

The server also answers grpc.health.v1.Health and gRPC server reflection (v1 and v1alpha).
Debian's python3-grpcio has neither grpc_health nor grpc_reflection, so both are implemented here
from their .proto files. Python message modules are generated at startup with protoc (Debian's
protobuf-compiler), from proto/tandem/v1/*.proto and protos/tandem_grpc/*.proto.
Needs: python3-grpcio, python3-protobuf, protoc.
"""

import argparse
import atexit
import concurrent.futures
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import grpc

import reward_workers

HERE = os.path.dirname(os.path.abspath(__file__))
REWARD_SERVICE = "tandem.v1.RewardService"
PROTOS = ["tandem/v1/common.proto", "tandem/v1/reward.proto", "tandem_grpc/health.proto",
          "tandem_grpc/reflection.proto"]


def generate_messages(proto_dir, protoc):
    """Compiles the .proto files into a temp dir, puts it on sys.path, returns the modules."""
    out = tempfile.mkdtemp(prefix="tandem_reward_pb_")
    atexit.register(shutil.rmtree, out, True)
    cmd = [protoc, f"-I{proto_dir}", f"-I{os.path.join(HERE, 'protos')}", f"--python_out={out}"]
    result = subprocess.run(cmd + PROTOS, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"tandem_reward_server: protoc failed:\n{result.stderr}")
    sys.path.insert(0, out)
    names = ["tandem.v1.reward_pb2", "tandem_grpc.health_pb2", "tandem_grpc.reflection_pb2"]
    return [importlib.import_module(n) for n in names]


class RewardService:
    def __init__(self, pool, pb, threads):
        self._pool = pool
        self._pb = pb
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads)

    def _score_item(self, item):
        result = self._pb.RewardResult(id=item.id)
        try:
            result.score, metrics, extras = self._pool.score(
                item.data_source, item.response, item.ground_truth, item.extra_info_json)
            result.metrics.update(metrics)
            result.extras.update(extras)
        except reward_workers.ItemError as e:
            result.error.code, result.error.message = e.code, e.message
        return result

    def score(self, request, context):
        results = self._executor.map(self._score_item, request.items)
        return self._pb.ScoreResponse(results=list(results))


class HealthService:
    """grpc.health.v1.Health: SERVING for "" and the reward service until shutdown begins."""

    def __init__(self, pb):
        self._pb = pb
        self._serving = True
        self._changed = threading.Condition()

    def set_serving(self, serving):
        with self._changed:
            self._serving = serving
            self._changed.notify_all()

    def _status(self, service):
        R = self._pb.HealthCheckResponse
        if service not in ("", REWARD_SERVICE):
            return None
        return R.SERVING if self._serving else R.NOT_SERVING

    def check(self, request, context):
        status = self._status(request.service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return self._pb.HealthCheckResponse(status=status)

    def watch(self, request, context):
        last = None
        while context.is_active():
            status = self._status(request.service)
            if status is None:
                status = self._pb.HealthCheckResponse.SERVICE_UNKNOWN
            if status != last:
                yield self._pb.HealthCheckResponse(status=status)
                last = status
            with self._changed:
                self._changed.wait(timeout=1.0)


class ReflectionService:
    """Server reflection from the protobuf descriptor pool: list services, fetch files."""

    def __init__(self, pb, services):
        from google.protobuf import descriptor_pool
        self._pb = pb
        self._pool = descriptor_pool.Default()
        self._services = services

    def _files(self, fd):
        """The file and everything it imports, each once."""
        seen, order, stack = set(), [], [fd]
        while stack:
            f = stack.pop()
            if f.name in seen:
                continue
            seen.add(f.name)
            order.append(f.serialized_pb)
            stack.extend(f.dependencies)
        return order

    def _answer(self, request):
        response = self._pb.ServerReflectionResponse(valid_host=request.host,
                                                     original_request=request)
        kind = request.WhichOneof("message_request")
        try:
            if kind == "list_services":
                for name in self._services:
                    response.list_services_response.service.add(name=name)
            elif kind == "file_by_filename":
                fd = self._pool.FindFileByName(request.file_by_filename)
                response.file_descriptor_response.file_descriptor_proto.extend(self._files(fd))
            elif kind == "file_containing_symbol":
                fd = self._pool.FindFileContainingSymbol(request.file_containing_symbol)
                response.file_descriptor_response.file_descriptor_proto.extend(self._files(fd))
            elif kind == "all_extension_numbers_of_type":
                self._pool.FindMessageTypeByName(request.all_extension_numbers_of_type)
                response.all_extension_numbers_response.base_type_name = \
                    request.all_extension_numbers_of_type
            else:
                response.error_response.error_code = grpc.StatusCode.UNIMPLEMENTED.value[0]
                response.error_response.error_message = f"{kind} is not supported"
        except KeyError as e:
            response.ClearField("message_response")
            response.error_response.error_code = grpc.StatusCode.NOT_FOUND.value[0]
            response.error_response.error_message = str(e)
        return response

    def info(self, request_iterator, context):
        for request in request_iterator:
            yield self._answer(request)


def handlers(pb_reward, pb_health, pb_refl, reward, health, reflection):
    u = grpc.unary_unary_rpc_method_handler
    reward_h = grpc.method_handlers_generic_handler(REWARD_SERVICE, {
        "Score": u(reward.score, request_deserializer=pb_reward.ScoreRequest.FromString,
                   response_serializer=pb_reward.ScoreResponse.SerializeToString)})
    health_h = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": u(health.check, request_deserializer=pb_health.HealthCheckRequest.FromString,
                   response_serializer=pb_health.HealthCheckResponse.SerializeToString),
        "Watch": grpc.unary_stream_rpc_method_handler(
            health.watch, request_deserializer=pb_health.HealthCheckRequest.FromString,
            response_serializer=pb_health.HealthCheckResponse.SerializeToString)})
    refl = grpc.stream_stream_rpc_method_handler(
        reflection.info, request_deserializer=pb_refl.ServerReflectionRequest.FromString,
        response_serializer=pb_refl.ServerReflectionResponse.SerializeToString)
    refl_h = [grpc.method_handlers_generic_handler(f"grpc.reflection.{v}.ServerReflection",
                                                   {"ServerReflectionInfo": refl})
              for v in ("v1", "v1alpha")]
    return [reward_h, health_h] + refl_h


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("function", help="path/to/file.py:function_name (verl compute_score style)")
    p.add_argument("--port", type=int, default=50051, help="0 picks a free port (printed)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes = items scored at once (default: CPU count)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per item (default 30)")
    p.add_argument("--reward-kwargs", default="{}",
                   help="JSON object of extra keyword arguments (verl's reward_kwargs)")
    p.add_argument("--proto-dir", default=os.path.join(HERE, "..", "..", "proto"))
    p.add_argument("--protoc", default=shutil.which("protoc") or "protoc")
    args = p.parse_args(argv)
    if args.workers < 1 or args.timeout <= 0:
        p.error("--workers must be >= 1 and --timeout > 0")
    try:
        args.reward_kwargs = json.loads(args.reward_kwargs)
        assert isinstance(args.reward_kwargs, dict)
    except (json.JSONDecodeError, AssertionError):
        p.error("--reward-kwargs must be a JSON object")
    return args


def main(argv=None):
    args = parse_args(argv)
    pb_reward, pb_health, pb_refl = generate_messages(args.proto_dir, args.protoc)
    try:
        pool = reward_workers.WorkerPool(args.function, args.workers, args.timeout,
                                         args.reward_kwargs)
    except ValueError as e:
        sys.exit(f"tandem_reward_server: {e}")
    health = HealthService(pb_health)
    services = [REWARD_SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=args.workers + 8),
                         options=[("grpc.max_receive_message_length", 64 << 20),
                                  ("grpc.max_send_message_length", 64 << 20)])
    server.add_generic_rpc_handlers(handlers(
        pb_reward, pb_health, pb_refl, RewardService(pool, pb_reward, args.workers), health,
        ReflectionService(pb_refl, services)))
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if port == 0:
        sys.exit(f"tandem_reward_server: cannot listen on {args.host}:{args.port}")
    server.start()
    print(f"tandem_reward_server: serving {args.function} on port {port} "
          f"({args.workers} workers, {args.timeout:g} s per item)", file=sys.stderr, flush=True)

    def shutdown(signum, frame):
        health.set_serving(False)
        threading.Thread(target=server.stop, args=(5,), daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    server.wait_for_termination()
    pool.close()


if __name__ == "__main__":
    main()
