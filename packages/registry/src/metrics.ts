const BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/** The registry's own Prometheus metrics: gauges read on scrape, counters, request durations. */
export class RegistryMetrics {
  events = 0;
  watchRestarts = 0;
  hookFailures = 0;
  /** Writes of queued frames to every watcher, and the time they took. */
  fanOuts = 0;
  fanOutSeconds = 0;
  private readonly durations = new Map<string, { counts: number[]; sum: number; count: number }>();

  observe(method: string, route: string, code: number, seconds: number): void {
    const key = `method="${method}",route="${route}",code="${code}"`;
    let h = this.durations.get(key);
    if (!h) {
      h = { counts: BUCKETS.map(() => 0), sum: 0, count: 0 };
      this.durations.set(key, h);
    }
    for (let i = 0; i < BUCKETS.length; i++) if (seconds <= BUCKETS[i]!) h.counts[i]!++;
    h.sum += seconds;
    h.count++;
  }

  render(g: {
    sandboxes: number;
    tombstones: number;
    groups: number;
    watchers: number;
    revision: number;
  }): string {
    const mem = process.memoryUsage();
    const cpu = process.cpuUsage();
    const lines = [
      '# HELP branchline_registry_sandboxes Live sandboxes.',
      '# TYPE branchline_registry_sandboxes gauge',
      `branchline_registry_sandboxes ${g.sandboxes}`,
      '# HELP branchline_registry_tombstones Deleted sandboxes kept for ownership history.',
      '# TYPE branchline_registry_tombstones gauge',
      `branchline_registry_tombstones ${g.tombstones}`,
      '# HELP branchline_registry_groups Live route groups.',
      '# TYPE branchline_registry_groups gauge',
      `branchline_registry_groups ${g.groups}`,
      '# HELP branchline_registry_watchers Open watch streams.',
      '# TYPE branchline_registry_watchers gauge',
      `branchline_registry_watchers ${g.watchers}`,
      '# HELP branchline_registry_revision Latest applied revision.',
      '# TYPE branchline_registry_revision gauge',
      `branchline_registry_revision ${g.revision}`,
      '# HELP branchline_registry_events_total Change events applied and streamed.',
      '# TYPE branchline_registry_events_total counter',
      `branchline_registry_events_total ${this.events}`,
      '# HELP branchline_registry_hook_failures_total Resource hook calls that failed.',
      '# TYPE branchline_registry_hook_failures_total counter',
      `branchline_registry_hook_failures_total ${this.hookFailures}`,
      '# HELP branchline_registry_watch_fanout_seconds Time spent writing queued frames to every watcher.',
      '# TYPE branchline_registry_watch_fanout_seconds summary',
      `branchline_registry_watch_fanout_seconds_sum ${this.fanOutSeconds}`,
      `branchline_registry_watch_fanout_seconds_count ${this.fanOuts}`,
      '# TYPE process_cpu_seconds_total counter',
      `process_cpu_seconds_total ${(cpu.user + cpu.system) / 1e6}`,
      '# TYPE process_resident_memory_bytes gauge',
      `process_resident_memory_bytes ${mem.rss}`,
      '# TYPE nodejs_heap_used_bytes gauge',
      `nodejs_heap_used_bytes ${mem.heapUsed}`,
      '# HELP branchline_registry_http_request_duration_seconds HTTP request durations.',
      '# TYPE branchline_registry_http_request_duration_seconds histogram',
    ];
    for (const [key, h] of this.durations) {
      for (let i = 0; i < BUCKETS.length; i++)
        lines.push(
          `branchline_registry_http_request_duration_seconds_bucket{${key},le="${BUCKETS[i]}"} ${h.counts[i]}`,
        );
      lines.push(`branchline_registry_http_request_duration_seconds_bucket{${key},le="+Inf"} ${h.count}`);
      lines.push(`branchline_registry_http_request_duration_seconds_sum{${key}} ${h.sum}`);
      lines.push(`branchline_registry_http_request_duration_seconds_count{${key}} ${h.count}`);
    }
    return `${lines.join('\n')}\n`;
  }
}
