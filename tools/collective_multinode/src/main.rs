//! Two processes x one peer, one global all-reduce after another, through burn-collective
//! 0.21's orchestrator on localhost.
//!
//! `cargo run -- [rounds]` starts the orchestrator on a thread, spawns itself twice as the
//! two nodes, and waits at most 60 s for them. Each node registers once and sums
//! `[1, 2, 3] x (rank 0: 1, rank 1: 10) x (call + 1)` three times. Observed on 0.21.0: the
//! first call returns `[11, 22, 33]` on both nodes and the second never returns, because
//! `global/node/sync.rs` clears a copy of the list of synced nodes (`.to_vec()`), not the
//! list itself, so the next sync waits for a list that can no longer match.

use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use burn_backend::TensorData;
use burn_backend::ops::FloatTensorOps;
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};
use burn_ndarray::NdArray;

type B = NdArray<f32>;

/// Below Linux's ephemeral range (32768 and up): burn-communication drops the error of a
/// data service that cannot bind its port.
const ORCHESTRATOR_PORT: u16 = 29_300;
const DATA_PORT: u16 = 29_310;
const CALLS: u32 = 3;
const TIME_LIMIT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("node") => {
            node(args[2].parse().expect("rank"));
            ExitCode::SUCCESS
        }
        _ => launch(),
    }
}

/// The orchestrator on this process's runtime, and the two nodes as child processes.
fn launch() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.spawn(burn_collective::start_global_orchestrator(ORCHESTRATOR_PORT));
    let exe = std::env::current_exe().expect("own path");
    let mut nodes: Vec<Child> = (0..2)
        .map(|rank| {
            Command::new(&exe)
                .args(["node", &rank.to_string()])
                .spawn()
                .expect("spawn a node")
        })
        .collect();
    let started = Instant::now();
    let mut done = [false; 2];
    while started.elapsed() < TIME_LIMIT && !done.iter().all(|d| *d) {
        for (rank, node) in nodes.iter_mut().enumerate() {
            done[rank] |= node.try_wait().expect("wait").is_some();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for node in &mut nodes {
        let _ = node.kill();
    }
    runtime.shutdown_background();
    match done {
        [true, true] => {
            println!("both nodes finished {CALLS} all-reduces");
            ExitCode::SUCCESS
        }
        _ => {
            println!("HUNG: the nodes did not finish within {TIME_LIMIT:?}");
            ExitCode::FAILURE
        }
    }
}

/// One node with one peer: register once, then [`CALLS`] all-reduces.
fn node(rank: u16) {
    let device = Default::default();
    let data_port = DATA_PORT + rank;
    let config = CollectiveConfig::default()
        .with_num_devices(1)
        .with_num_nodes(2)
        .with_global_address(address(ORCHESTRATOR_PORT).parse().expect("address"))
        .with_node_address(address(data_port).parse().expect("address"))
        .with_data_service_port(data_port);
    let peer = PeerId::from(0u32);
    burn_collective::register::<B>(peer, device, config).expect("register");
    let scale = if rank == 0 { 1.0 } else { 10.0 };
    for call in 0..CALLS {
        let values: Vec<f32> = (1..=3).map(|x| x as f32 * scale * (call + 1) as f32).collect();
        let tensor = B::float_from_data(TensorData::new(values, [3]), &device);
        println!("[node {rank}] all-reduce #{call} ...");
        let sum = burn_collective::all_reduce::<B>(peer, tensor, ReduceOperation::Sum)
            .expect("all-reduce");
        let sum = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(B::float_into_data(sum))
            .expect("read back");
        println!("[node {rank}] all-reduce #{call} = {:?}", sum.as_slice::<f32>().unwrap());
    }
    burn_collective::finish_collective::<B>(peer).expect("finish");
}

/// A websocket address on localhost (burn-communication appends its own paths).
fn address(port: u16) -> String {
    format!("ws://127.0.0.1:{port}")
}
