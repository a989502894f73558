"""A local S3 API server for the S3 benchmark and tests: moto's server mode on
loopback (the `dev` extra), and a bucket in it."""
from __future__ import annotations

import logging
import uuid

#: moto accepts any credentials; these are the ones every local client signs with.
CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}


def start_moto():
    """(server, endpoint URL) of a moto server on a free loopback port; stop it with ``server.stop()``."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def s3_client(endpoint: str):
    """A boto3 client of the local server: a view of the bucket independent of pas
    (the tests read and damage objects with it behind pas's back)."""
    import boto3
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=CREDENTIALS["access_key_id"],
                        aws_secret_access_key=CREDENTIALS["secret_access_key"], region_name=CREDENTIALS["region"])


def new_bucket(endpoint: str, prefix: str = "pas-") -> str:
    name = prefix + uuid.uuid4().hex[:12]
    s3_client(endpoint).create_bucket(Bucket=name)
    return name
