use cryo_tests::{cryo_bin, Workload};
#[test]
fn measure() {
    cryo_bin();
    for n in [10_000u32, 100_000, 1_000_000] {
        let arg = format!("big={n}");
        let mut w = Workload::spawn("bpf", &[arg.as_str()]);
        let img = w.path("img");
        let t = std::time::Instant::now();
        w.dump_ok(&img);
        let dump = t.elapsed();
        let size: u64 = std::fs::read_dir(&img)
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().len())
            .sum();
        let t = std::time::Instant::now();
        w.restore_background(&img);
        let restore = t.elapsed();
        let last = n - 1;
        assert_eq!(
            w.cmd(&format!("get 75 {last}")),
            (u64::from(last) * 3).to_string()
        );
        eprintln!("MEASURE n={n} dump={dump:?} restore={restore:?} image={size}");
        w.kill_restored();
    }
}
