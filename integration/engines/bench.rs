//! The end-to-end cost of a container through Docker: `docker run --rm --runtime=R IMAGE true`,
//! tinyrt and runc interleaved round by round on the same daemons.
//!
//! `cargo test --test engines -- --bench` measures (TINYRT_ENGINES_BENCH_ROUNDS rounds, 30 by
//! default) and prints the medians and their ratio; a plain `cargo test` runs each once, as a
//! check that the benchmark works, and times nothing.

use crate::util::Out;
use crate::{Rt, engines};
use libtest_mimic::{Failed, Measurement};
use std::time::Instant;

fn once(rt: Rt) -> Result<f64, Failed> {
    let e = engines();
    let t = Instant::now();
    let o: Out = e.docker(&format!("run --rm --runtime={} {} true", rt.docker_name(), e.image));
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    o.ok()?;
    Ok(ms)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn docker_run_rm_true(test_mode: bool) -> Result<Option<Measurement>, Failed> {
    if test_mode {
        for rt in Rt::ALL {
            once(rt)?;
        }
        return Ok(None);
    }
    let rounds: usize = std::env::var("TINYRT_ENGINES_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    // One warm-up each (image and layer caches), then interleaved rounds, alternating which
    // runtime goes first.
    for rt in Rt::ALL {
        once(rt)?;
    }
    let mut times = [vec![], vec![]];
    for r in 0..rounds {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            times[i].push(once(Rt::ALL[i])?);
        }
    }
    let tiny = times[0].clone();
    let [mut t, mut r] = times;
    let (mt, mr) = (median(&mut t), median(&mut r));
    println!("\ndocker run --rm IMAGE true, median of {rounds} interleaved rounds:");
    println!("  tinyrt {mt:8.1} ms");
    println!("  runc   {mr:8.1} ms");
    println!("  tinyrt / runc = {:.2}x\n", mt / mr);
    let avg = tiny.iter().sum::<f64>() / tiny.len() as f64;
    // libtest prints `variance` as the "+/-" spread: give the standard deviation, in ns.
    let sd = (tiny.iter().map(|x| (x - avg).powi(2)).sum::<f64>() / tiny.len() as f64).sqrt();
    Ok(Some(Measurement {
        avg: (avg * 1e6) as u64,
        variance: (sd * 1e6) as u64,
    }))
}
