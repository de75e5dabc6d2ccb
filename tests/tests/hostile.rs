//! A service whose threads run code with wrong unwind tables, with none,
//! with a stack pointer that points nowhere, near their stack limit, while
//! libraries are loaded and unloaded and children are spawned
//! (`src/bin/hostile.rs`), profiled at 1000 Hz by four readers while its
//! threads are dumped: it is alive and serving at the end, and every
//! profile is valid and says where a walk stopped and why.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pprof_tests::{decode_profile, get, go_tool_pprof, save, stacks};

/// The hostile service, killed when dropped.
struct Hostile {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Hostile {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hostile"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hostile");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("its address");
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("address");
    Hostile { child, addr }
}

/// Whether `hostile` is still running (it has not exited or been killed).
fn alive(hostile: &mut Hostile) -> bool {
    matches!(hostile.child.try_wait(), Ok(None))
}

#[test]
fn threads_the_unwinder_cannot_trust_neither_kill_the_service_nor_spoil_its_profiles() {
    let mut hostile = start();
    let addr = hostile.addr;
    // Let the near-limit thread reach its depth and the others loop.
    std::thread::sleep(Duration::from_secs(1));
    let readers: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || get(addr, "/debug/pprof/profile?seconds=8&hz=1000")))
        .collect();
    let dumper = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(8);
        let mut dumps = 0;
        while Instant::now() < until {
            let text = get(addr, "/debug/pprof/goroutine?debug=2");
            assert_eq!(text.status, 200, "{}", text.text());
            let proto = get(addr, "/debug/pprof/goroutine");
            assert_eq!(proto.status, 200);
            dumps += 2;
            std::thread::sleep(Duration::from_millis(100));
        }
        dumps
    });
    let profiles: Vec<_> = readers
        .into_iter()
        .map(|r| r.join().expect("reader"))
        .collect();
    let dumps = dumper.join().expect("dumper");
    assert!(alive(&mut hostile), "the service died under the profilers");
    assert!(dumps >= 4, "{dumps} dumps");
    assert_eq!(get(addr, "/hello").text(), "hello\n");
    let stats = get(addr, "/stats").text();
    assert!(stats.contains("failed 0 "), "children failed: {stats}");
    let loads: u64 = stats
        .split_whitespace()
        .skip_while(|w| *w != "loads")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(loads > 10, "the library was loaded and unloaded: {stats}");

    for (i, response) in profiles.iter().enumerate() {
        assert_eq!(response.status, 200, "{}", response.text());
        let profile = decode_profile(&response.body);
        let samples = stacks(&profile);
        let on = |thread: &str| -> Vec<&pprof_tests::Stack> {
            samples
                .iter()
                .filter(|s| s.label("thread") == Some(thread))
                .collect()
        };
        for thread in ["wrong-cfi", "huge-cfa", "no-cfi", "wild-sp", "near-limit"] {
            assert!(!on(thread).is_empty(), "profile {i}: no sample of {thread}");
        }
        // Every stack reaches its thread's first frame, or ends in a frame
        // that says why it stopped.
        for sample in &samples {
            let last = sample.functions.last().map_or("", String::as_str);
            assert!(
                ["clone3", "start_thread", "_start"].contains(&last)
                    || last.starts_with("pprof_core::_"),
                "profile {i}: a stack that ends nowhere: {sample:?}"
            );
        }
        // Where the tables lie, the walk stops and says why.
        let reasons = |thread: &str| -> Vec<String> {
            on(thread)
                .iter()
                .filter_map(|s| s.functions.last().cloned())
                .collect()
        };
        assert!(
            reasons("wrong-cfi")
                .iter()
                .any(|f| f == "pprof_core::_StackEnds_UnknownCode"),
            "profile {i}: {:?}",
            reasons("wrong-cfi")
        );
        assert!(
            reasons("wild-sp")
                .iter()
                .any(|f| f == "pprof_core::_NotUnwound_StackNotYetKnown"),
            "profile {i}: {:?}",
            reasons("wild-sp")
        );
        // The thread near its limit is walked whole, deep as it is.
        assert!(
            on("near-limit").iter().any(|s| s.has("hostile::descend")),
            "profile {i}: {:?}",
            on("near-limit")
        );
        // Every reader reads it.
        let path = save(&response.body, &format!("hostile-{i}.pb.gz"));
        if let Some(top) = go_tool_pprof(&["-top", "-nodecount=40", &path]) {
            assert!(top.contains("Type: cpu"), "{top}");
            assert!(top.contains("pprof_hostile_"), "{top}");
        }
    }
}

#[test]
fn a_program_that_execs_during_a_profile_runs_what_it_execs() {
    let status = Command::new(env!("CARGO_BIN_EXE_hostile"))
        .arg("exec-during-profile")
        .status()
        .expect("run");
    assert_eq!(
        status.code(),
        Some(7),
        "the exec'd shell should exit 7, not die of the profiler's signal: {status:?}"
    );
}
