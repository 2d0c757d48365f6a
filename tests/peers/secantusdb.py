"""SecantusDB for the MongoDB store's tests, with a SCRAM user and --auth.

SecantusDB (PyPI `secantusdb`, GPL; installed at test time by xtask, never
linked or shipped) provisions users only on a server without --auth, and
keeps them in its storage directory. So this launcher

1. starts `secantusd-py` without --auth on a scratch port and a fresh
   storage directory, creates the test user (root role) there with pymongo,
   and stops it;
2. replaces itself (exec, same pid: xtask stops it like any service) with
   `secantusd-py --auth --enable-test-commands` on the given port and the
   same storage. By default SecantusDB advertises a single-node replica set,
   so the driver runs transactions.

The user and password come from the environment (FLOW_TEST_SECANTUS_USER,
FLOW_TEST_SECANTUS_PASSWORD), never from the argument vector.

Usage: python secantusdb.py --port PORT --storage DIR
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time

import pymongo


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port, process, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"secantusd-py exited ({process.returncode}) while provisioning")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"secantusd-py did not answer on port {port} within {timeout} s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--storage", required=True)
    args = parser.parse_args()
    user = os.environ["FLOW_TEST_SECANTUS_USER"]
    password = os.environ["FLOW_TEST_SECANTUS_PASSWORD"]
    server = os.path.join(os.path.dirname(sys.executable), "secantusd-py")

    shutil.rmtree(args.storage, ignore_errors=True)
    os.makedirs(args.storage)
    scratch = free_port()
    provisioning = subprocess.Popen(
        [server, "--host", "127.0.0.1", "--port", str(scratch),
         "--storage-path", args.storage, "--log-level", "WARNING"],
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(scratch, provisioning)
        client = pymongo.MongoClient(f"mongodb://127.0.0.1:{scratch}/", directConnection=True)
        client.admin.command("createUser", user, pwd=password, roles=["root"])
        client.close()
    finally:
        provisioning.terminate()
        try:
            provisioning.wait(30)
        except subprocess.TimeoutExpired:
            provisioning.kill()
            sys.exit("secantusd-py did not stop after provisioning")
    print(f"secantusdb.py: user {user} created; starting with --auth", flush=True)
    os.execv(server, [
        server, "--host", "127.0.0.1", "--port", str(args.port),
        "--storage-path", args.storage, "--auth", "--enable-test-commands",
        "--log-level", "WARNING",
    ])


if __name__ == "__main__":
    main()
