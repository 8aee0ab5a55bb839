"""Build the enabled collectors from the config, with a one-line reason for each disabled one."""

from __future__ import annotations

from typing import Any

from hopscope.config.collect import CollectConfig


def build_collectors(
    cfg: CollectConfig, store: Any, *, nvml_module: Any = None
) -> tuple[list[Any], dict[str, str]]:
    enabled: list[Any] = []
    disabled: dict[str, str] = {}
    host = cfg.host_name

    if not cfg.nvml.enabled:
        disabled["nvml"] = "[collect.nvml] enabled = false"
    else:
        from hopscope.collectors.nvml import NvmlCollector  # noqa: PLC0415  (each source loads only where configured)

        nvml = NvmlCollector(cfg.nvml, host=host, nvml=nvml_module)
        err = nvml.init()
        if err is None:
            enabled.append(nvml)
        else:
            # Still scheduled: it retries init every init_retry_s (a driver may come up later).
            enabled.append(nvml)
            disabled["nvml"] = f"NVML init failed ({err}); retrying every {cfg.nvml.init_retry_s:g} s"

    if not cfg.network.enabled:
        disabled["network"] = "[collect.network] enabled = false"
    else:
        from hopscope.collectors.network import NetworkCollector  # noqa: PLC0415  (ditto)

        net = NetworkCollector(cfg.network, host=host)
        err = net.available()
        if err is None:
            enabled.append(net)
        else:
            disabled["network"] = err

    if not cfg.probes.targets:
        disabled["probe"] = "no [[collect.probes.targets]] configured"
    else:
        from hopscope.collectors.probe import ProbeCollector  # noqa: PLC0415  (ditto: httpcore)

        enabled.append(ProbeCollector(cfg.probes, host=host))

    if not cfg.prometheus.url:
        disabled["prometheus"] = "no [collect.prometheus] url configured"
    elif not cfg.prometheus.queries and not cfg.prometheus.presets:
        disabled["prometheus"] = "[collect.prometheus] has a url but no queries or presets"
    else:
        from hopscope.collectors.prometheus import PrometheusCollector  # noqa: PLC0415  (ditto: prometheus-api-client)

        enabled.append(PrometheusCollector(cfg.prometheus, store))
    return enabled, disabled
