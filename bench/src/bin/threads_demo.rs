//! A small Rust program that never uses CUDA (for `tslice-bench noncuda`):
//! 8 threads each run a little integer arithmetic and allocate a little, then
//! the results are combined through a channel and printed.

use std::sync::mpsc;

fn work(seed: u64) -> u64 {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut acc = Vec::with_capacity(64);
    for i in 0..200_000u64 {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if i % 4096 == 0 {
            acc.push(x);
        }
    }
    acc.iter().fold(0u64, |a, v| a.rotate_left(5) ^ v)
}

fn main() {
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send(work(t + 1));
            })
        })
        .collect();
    drop(tx);
    for h in handles {
        h.join().expect("worker thread panicked");
    }
    let sum = rx.iter().fold(0u64, |a, v| a ^ v);
    println!("threads=8 checksum={sum:016x}");
}
