"""Produce one lz4 record batch whose compressed bytes are garbage under a valid CRC (run as a script).

aiokafka's pure-Python batch builder is used with its lz4 encoder replaced; usage:
``python corrupt_batch.py BOOTSTRAP TOPIC PARTITION KEY N_RECORDS``.
"""

from __future__ import annotations

import asyncio
import os
import sys

os.environ["AIOKAFKA_NO_EXTENSIONS"] = "1"  # before aiokafka is imported: the Python builder, patchable

import aiokafka.record.default_records as records
from aiokafka import AIOKafkaProducer


def garbage(_: bytes) -> bytes:
    return b"\x04\x22\x4d\x18not lz4"  # the lz4 frame magic, then nonsense (shorter than the data)


records.lz4_encode = garbage


async def main(bootstrap: str, topic: str, partition: int, key: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type="lz4")
    await producer.start()
    try:
        batch = producer.create_batch()
        for _ in range(n):
            batch.append(key=key.encode(), value=b"x" * 300, timestamp=None)
        await (await producer.send_batch(batch, topic, partition=partition))
    finally:
        await producer.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])))
