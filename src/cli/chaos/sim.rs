//! `keepwire chaos --sim`: explore seeded fault schedules in the deterministic simulator.

use std::io::IsTerminal;
use std::process::ExitCode;

use keepwire::sim;

use super::ChaosArgs;

/// Runs `keepwire chaos --sim`.
pub fn run(args: &ChaosArgs) -> ExitCode {
    let faults = args.faults.unwrap_or(20);
    // A machine that panics is reported as a violation with its seed, not as a crash.
    std::panic::set_hook(Box::new(|_| {}));
    if let Some(seed) = args.replay {
        let report = match sim::explain(seed, faults) {
            Some(v) => {
                print_violation(&v);
                1
            }
            None => {
                println!("schedule {seed}: no violation");
                0
            }
        };
        return ExitCode::from(report);
    }
    let tty = std::io::stderr().is_terminal();
    let total = args.schedules;
    let report = sim::explore(args.seed, total, faults, |done, bad| {
        if tty {
            eprint!("\r{done}/{total} schedules, {bad} violating");
        }
    });
    if tty {
        eprintln!();
    }
    for v in &report.violations {
        print_violation(v);
    }
    println!(
        "{} schedules of {} faults (seed {}): {} steps, {} messages raced an unsubscribe, {} violating, {:.1} s, {:.0} schedules/s",
        report.schedules,
        report.faults,
        report.seed,
        report.steps,
        report.raced_unsubscribe,
        report.violating_schedules,
        report.elapsed_s,
        report.schedules_per_s
    );
    super::finish(args.json, &report, report.violating_schedules > 0)
}

fn print_violation(v: &sim::Violation) {
    println!("VIOLATION (seed {}, {}): {}", v.seed, v.dialect, v.what);
    println!("  faults after shrinking:");
    for f in &v.faults {
        println!("    {f}");
    }
    println!("  last events:");
    for line in &v.trace {
        println!("    {line}");
    }
    println!(
        "  replay: keepwire chaos --sim --replay {} --faults <as run>",
        v.seed
    );
}
