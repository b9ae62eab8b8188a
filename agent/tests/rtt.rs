//! Benchmark (prints, asserts nothing about timing): Health round-trip over the agent's Unix
//! socket directly vs through a hybrid-vsock proxy (one extra hop, as through hull-vmm).
//! Run: cargo test -p hull-agent --release --test rtt -- --ignored --nocapture

mod common;

use std::time::{Duration, Instant};

use common::{ctx, start_hybrid_proxy, AgentProcess};
use hull_proto::agent::HealthRequest;
use hull_proto::agent_ttrpc::AgentServiceClient;

const CALLS: usize = 1000;
const WARMUP: usize = 50;

async fn measure(client: &AgentServiceClient) -> Vec<Duration> {
    let request = HealthRequest::new();
    for _ in 0..WARMUP {
        client.health(ctx(), &request).await.unwrap();
    }
    let mut samples = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let start = Instant::now();
        client.health(ctx(), &request).await.unwrap();
        samples.push(start.elapsed());
    }
    samples.sort();
    samples
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

fn report(name: &str, sorted: &[Duration]) {
    println!(
        "{name:<22} n={} min={:>7.1?} p50={:>7.1?} p90={:>7.1?} p99={:>7.1?}",
        sorted.len(),
        sorted[0],
        percentile(sorted, 50),
        percentile(sorted, 90),
        percentile(sorted, 99)
    );
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn health_round_trip_direct_vs_hybrid_proxy() {
    let agent = AgentProcess::start();
    let proxy = start_hybrid_proxy(&agent.socket, hull_proto::AGENT_API_PORT);
    let direct = agent.client().await;
    let proxied = AgentServiceClient::new(
        hull_proto::client::connect_hybrid_vsock(&proxy.path, hull_proto::AGENT_API_PORT)
            .await
            .unwrap(),
    );

    let direct_samples = measure(&direct).await;
    let proxied_samples = measure(&proxied).await;
    println!("Health round trip, host process agent (no VM; measured on this host):");
    report("direct unix socket", &direct_samples);
    report("hybrid-vsock proxy", &proxied_samples);
    let ratio = percentile(&proxied_samples, 50).as_secs_f64()
        / percentile(&direct_samples, 50).as_secs_f64();
    println!("median ratio proxy/direct = {ratio:.2}");
}
