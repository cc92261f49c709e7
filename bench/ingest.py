"""Ingest: accepted ``POST /api/chat`` per second of the real api against a bare Litestar POST; the same for GET.

The real api (``athenic-api``: validation, middleware, logging, one JetStream publish
acknowledged before the 200) and a bare Litestar JSON POST with the same uvicorn settings
run side by side on this machine and take turns under the same ``wrk`` load; the ratio
of their medians is the figure to compare between machines and versions. Only 200s count
as accepted. The request stream is purged between rounds so every round starts alike.
Then ``GET /api/chat/response/{clientId}`` of a completed conversation (the api reads the
request stream and the record, two broker round trips) against a bare Litestar GET answering
the same type from memory, in the same way.

    apt-get install -y wrk      # the load generator (Debian)
    .venv/bin/python bench/ingest.py [rounds] [seconds-per-round] [connections]
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

from _harness import (
    API_ENV,
    ROOT,
    Api,
    broker,
    connect,
    cpu_seconds,
    free_port,
    header,
    median,
    wait_for_port,
    workdir,
)
from athenic.shared import names
from athenic.shared.messages import ChatResponse, ResponseRecord, encode, iso_timestamp

LUA = """
wrk.method = "POST"
wrk.body = '{"message":"What is the factorial of 10?"}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"non2xx":%d,"errors":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


GET_LUA = LUA.replace('wrk.method = "POST"', 'wrk.method = "GET"').replace("wrk.body =", "-- wrk.body =")


def run_wrk(wrk: str, script: Path, url: str, seconds: int, connections: int) -> dict[str, float]:
    done = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    result: dict[str, float] = json.loads(line.removeprefix("RESULT "))
    accepted = result["requests"] - result["non2xx"] - result["errors"]
    result["accepted_per_s"] = accepted / (result["duration_us"] / 1e6)
    return result


async def completed(url: str, client_id: str) -> None:
    """A conversation as the orchestrator leaves it once answered: its record, nothing waiting."""
    nc, js = await connect(url)
    try:
        response = ChatResponse(message="3628800", requires_e2b=False, client_id=client_id, timestamp=iso_timestamp(),
                                request_id="0" * 32, status="completed")
        record = ResponseRecord(last_message="What is the factorial of 10?", last_response=response,
                                requires_e2b=False, status="completed", request_id="0" * 32, seq=1,
                                updated_at=iso_timestamp())
        await (await js.key_value(names.RESPONSES_BUCKET)).put(client_id, encode(record))
        await js.purge_stream(names.REQUEST_STREAM)
    finally:
        await nc.close()


def rounds(wrk: str, script: Path, urls: dict[str, str], pids: dict[str, int], nats_url: str, count: int,
           seconds: int, connections: int) -> dict[str, list[dict[str, float]]]:
    for url in urls.values():  # warm both up
        run_wrk(wrk, script, url, 2, connections)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
    for _ in range(count):
        for name, url in urls.items():
            asyncio.run(purge(nats_url))
            time.sleep(0.5)
            cpu = cpu_seconds(pids[name])
            result = run_wrk(wrk, script, url, seconds, connections)
            # the server's own CPU per answered request: what load elsewhere on the machine disturbs least
            result["cpu_us"] = (cpu_seconds(pids[name]) - cpu) / max(result["requests"], 1) * 1e6
            results[name].append(result)
    return results


def report(route: str, results: dict[str, list[dict[str, float]]]) -> float:
    medians = {}
    for name, label in (("bare", f"bare Litestar JSON {route}"), ("api", "athenic api")):
        rates = [r["accepted_per_s"] for r in results[name]]
        medians[name] = median(rates)
        rejected = sum(r["non2xx"] + r["errors"] for r in results[name])
        print(f"   {label:32s} median {medians[name]:8.0f} answered/s  (rounds: "
              f"{', '.join(f'{rate:.0f}' for rate in rates)}; latency p50 "
              f"{median([r['p50_us'] for r in results[name]]) / 1000:.1f} ms, p99 "
              f"{median([r['p99_us'] for r in results[name]]) / 1000:.1f} ms; not 200: {rejected:.0f})")
    ratio = medians["api"] / medians["bare"]
    cpu = {name: median([r["cpu_us"] for r in results[name]]) for name in results}
    print(f"   ratio api/bare, {route}: {ratio:.2f}x   (server CPU per request: bare {cpu['bare']:.0f} us, "
          f"api {cpu['api']:.0f} us: {cpu['bare'] / cpu['api']:.2f}x)")
    return ratio


async def purge(url: str) -> None:
    nc, js = await connect(url)
    try:
        await js.purge_stream(names.REQUEST_STREAM)
    finally:
        await nc.close()


def main(count: int, seconds: int, connections: int) -> int:
    wrk = shutil.which("wrk")
    if wrk is None:
        print("bench/ingest.py needs the load generator wrk, which is not installed.\n"
              "  Install it with: apt-get install -y wrk   (Debian/Ubuntu, as root)", file=sys.stderr)
        return 2
    header("ingest: accepted POST /api/chat per second (wrk, 1 thread, "
           f"{connections} connections, {count} rounds x {seconds} s each, interleaved); then GET alike")
    with workdir("ingest") as tmp, broker(tmp) as nats:
        script = tmp / "post.lua"
        script.write_text(LUA)
        api = Api(nats.url, tmp, **API_ENV).start()
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_bare_app.py"), str(bare_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(bare_port)
            bare_url = f"http://127.0.0.1:{bare_port}/api/chat"
            api_url = f"{api.url}/api/chat"
            assert httpx.post(bare_url, json={"message": "x"}).status_code == 200
            assert httpx.post(api_url, json={"message": "x"}).status_code == 200
            assert api.proc is not None
            pids = {"bare": bare.pid, "api": api.proc.pid}
            posts = rounds(wrk, script, {"bare": bare_url, "api": api_url}, pids, nats.url, count, seconds,
                           connections)
            client_id = "bench-get"
            asyncio.run(completed(nats.url, client_id))
            gets_urls = {"bare": f"{bare_url}/response/{client_id}", "api": f"{api_url}/response/{client_id}"}
            assert all(httpx.get(url).status_code == 200 for url in gets_urls.values())
            get_script = tmp / "get.lua"
            get_script.write_text(GET_LUA)
            gets = rounds(wrk, get_script, gets_urls, pids, nats.url, count, seconds, connections)
        finally:
            bare.terminate()
            bare.wait(10)
            api.terminate()
    report("POST", posts)
    report("GET", gets)
    return 0


if __name__ == "__main__":
    args = [int(arg) for arg in sys.argv[1:]]
    raise SystemExit(main(*(args + [3, 5, 32][len(args):])))
