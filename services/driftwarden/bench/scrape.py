"""Read a service's ``/metrics`` with prometheus_client's own parser (tests and fault trials).

>>> text = '# TYPE driftwarden_events_processed_total counter\\n' \\
...        'driftwarden_events_processed_total{model_id="m",model_version="1"} 3.0\\n'
>>> samples(families(text), "driftwarden_events_processed_total", model_id="m")
{(('model_id', 'm'), ('model_version', '1')): 3.0}
"""

from __future__ import annotations

import urllib.request

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


def families(text: str) -> dict[str, Metric]:
    """The metric families of an exposition ``text``, by family name."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def scrape(port: int) -> dict[str, Metric]:
    """The metric families a service on 127.0.0.1:``port`` exposes, by family name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return families(response.read().decode())


def samples(families: dict[str, Metric], name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Values of the samples called ``name`` whose labels include ``labels``, by their full label set."""
    family = families.get(name.removesuffix("_total").removesuffix("_count").removesuffix("_bucket"))
    found = {}
    for sample in family.samples if family else []:
        if sample.name == name and labels.items() <= sample.labels.items():
            found[tuple(sorted(sample.labels.items()))] = sample.value
    return found
