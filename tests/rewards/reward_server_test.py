"""Tests for rewards/python/tandem_reward_server.py with a verl-style function (verl_style_reward.py):
per-item scores, metrics and errors (raise, hang, crash, bad return), the server serving on after
each failure, grpc.health.v1, server reflection, startup errors and clean shutdown.
Run by ctest (label integration) with a python3 that has python3-grpcio and python3-protobuf."""

import os
import socket
import subprocess
import sys
import time
import unittest

import grpc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SERVER = os.path.join(ROOT, "rewards", "python", "tandem_reward_server.py")
FUNCTION = os.path.join(ROOT, "tests", "rewards", "verl_style_reward.py") + ":compute_score"
sys.path.insert(0, os.path.join(ROOT, "rewards", "python"))
import tandem_reward_server  # noqa: E402

PB, HEALTH, REFL = tandem_reward_server.generate_messages(
    os.path.join(ROOT, "proto"), "protoc")
from google.protobuf import descriptor_pb2  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*extra, function=FUNCTION):
    port = free_port()
    proc = subprocess.Popen([sys.executable, SERVER, "--host", "127.0.0.1", "--port", str(port),
                             function, *extra], stderr=subprocess.PIPE, text=True)
    return proc, port


class ServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc, port = start_server("--workers", "2", "--timeout", "1",
                                      "--reward-kwargs", '{"scale": 2.0}')
        cls.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(cls.channel).result(timeout=30)
        cls.score = cls.channel.unary_unary(
            "/tandem.v1.RewardService/Score", request_serializer=PB.ScoreRequest.SerializeToString,
            response_deserializer=PB.ScoreResponse.FromString)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.proc.terminate()
        cls.proc.wait(timeout=20)
        cls.proc.stderr.close()

    def item(self, data_source, response, ground_truth="72", extra="", id_=""):
        return PB.RewardItem(id=id_, data_source=data_source, response=response,
                             ground_truth=ground_truth, extra_info_json=extra)

    def test_scores_errors_and_keeps_serving(self):
        request = PB.ScoreRequest(items=[
            self.item("openai/gsm8k", "so #### 72", id_="a"),
            self.item("openai/gsm8k", "so #### 71"),
            self.item("openai/gsm8k", "72 without the marker"),
            self.item("test/raise", "x"),
            self.item("test/hang", "x"),
            self.item("test/crash", "x"),
            self.item("test/bad_return", "x"),
            self.item("test/dict", "it is 72", extra='{"split": "train"}'),
            self.item("test/dict", "x", extra="{not json"),
        ])
        start = time.monotonic()
        results = self.score(request, timeout=30).results
        self.assertLess(time.monotonic() - start, 10)
        self.assertEqual(len(results), 9)
        self.assertEqual(results[0].id, "a")
        self.assertEqual([r.score for r in results[:3]], [2.0, 0.2, 0.0])  # scale=2 from kwargs
        for r in results[:3]:
            self.assertEqual(r.error.code, 0)
        self.assertEqual(results[3].error.code, grpc.StatusCode.INTERNAL.value[0])
        self.assertIn("ValueError: cannot grade 'x'", results[3].error.message)
        self.assertEqual(results[4].error.code, grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
        self.assertIn("timed out after 1.0 s", results[4].error.message)
        self.assertEqual(results[5].error.code, grpc.StatusCode.INTERNAL.value[0])
        self.assertIn("exited with code 7", results[5].error.message)
        self.assertIn("expected a number", results[6].error.message)
        self.assertEqual(results[7].score, 2.0)
        self.assertEqual(dict(results[7].metrics), {"acc": 1.0})
        self.assertEqual(dict(results[7].extras), {"pred": "72", "split": "train"})
        self.assertEqual(results[8].error.code, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        # Replaced workers serve the next request.
        again = self.score(PB.ScoreRequest(items=[self.item("openai/gsm8k", "#### 72")] * 4),
                           timeout=30).results
        self.assertEqual([r.score for r in again], [2.0] * 4)
        self.assertEqual(len(self.score(PB.ScoreRequest(), timeout=10).results), 0)

    def test_health(self):
        check = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=HEALTH.HealthCheckRequest.SerializeToString,
            response_deserializer=HEALTH.HealthCheckResponse.FromString)
        for service in ("", "tandem.v1.RewardService"):
            status = check(HEALTH.HealthCheckRequest(service=service), timeout=10).status
            self.assertEqual(status, HEALTH.HealthCheckResponse.SERVING)
        with self.assertRaises(grpc.RpcError) as err:
            check(HEALTH.HealthCheckRequest(service="nope"), timeout=10)
        self.assertEqual(err.exception.code(), grpc.StatusCode.NOT_FOUND)
        watch = self.channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            request_serializer=HEALTH.HealthCheckRequest.SerializeToString,
            response_deserializer=HEALTH.HealthCheckResponse.FromString)
        stream = watch(HEALTH.HealthCheckRequest(service=""), timeout=10)
        self.assertEqual(next(stream).status, HEALTH.HealthCheckResponse.SERVING)
        stream.cancel()

    def reflect(self, version, **request):
        info = self.channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=REFL.ServerReflectionRequest.SerializeToString,
            response_deserializer=REFL.ServerReflectionResponse.FromString)
        return next(info(iter([REFL.ServerReflectionRequest(**request)]), timeout=10))

    def test_reflection(self):
        for version in ("v1", "v1alpha"):
            listed = self.reflect(version, list_services="")
            names = [s.name for s in listed.list_services_response.service]
            self.assertIn("tandem.v1.RewardService", names)
            self.assertIn("grpc.health.v1.Health", names)
        files = self.reflect("v1alpha", file_containing_symbol="tandem.v1.RewardService")
        protos = [descriptor_pb2.FileDescriptorProto.FromString(b)
                  for b in files.file_descriptor_response.file_descriptor_proto]
        self.assertEqual([p.name for p in protos],
                         ["tandem/v1/reward.proto", "tandem/v1/common.proto"])
        self.assertEqual(protos[0].service[0].method[0].name, "Score")
        by_name = self.reflect("v1", file_by_filename="tandem/v1/common.proto")
        self.assertEqual(len(by_name.file_descriptor_response.file_descriptor_proto), 1)
        missing = self.reflect("v1", file_containing_symbol="no.such.Symbol")
        self.assertEqual(missing.error_response.error_code, grpc.StatusCode.NOT_FOUND.value[0])


class StartupTest(unittest.TestCase):
    def test_bad_function_fails_fast(self):
        for function, message in [(FUNCTION.replace("compute_score", "nope"), "no callable 'nope'"),
                                  ("/no/such/file.py:f", "no such file"),
                                  ("missing_colon", "expected path/to/file.py:function_name")]:
            proc, _ = start_server(function=function)
            _, err = proc.communicate(timeout=60)
            self.assertNotEqual(proc.returncode, 0, function)
            self.assertIn(message, err, function)

    def test_sigterm_stops_cleanly(self):
        proc, port = start_server("--workers", "1")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 0, err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
