//! Crash safety: orch killed with SIGKILL at any moment leaves a state from which the
//! next build redoes what it must and never skips an instance that did not finish.

use std::time::Duration;

use crate::test::*;

fn sigkill(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[test]
fn killed_mid_command_the_instance_is_never_taken_as_built() {
    let t = Test::new().orchfile(
        r#"
[phase.a]
run = "echo partial > {output}; touch a.started; while [ ! -f release ]; do sleep 0.01; done; echo done >> {output}"
outputs = ["out/a.txt"]

[phase.b]
needs = ["a"]
run = "cat {needs.a.outputs} > {output}"
outputs = ["out/b.txt"]
"#,
    );
    let project = t.project().clone();
    let mut child = t.args(["build", "--run-id", "killed"]).spawn();
    wait_until("a to start", Duration::from_secs(20), || {
        project.exists("a.started")
    });
    sigkill(child.id());
    let _ = child.wait();
    // The orphaned command finishes by itself; its output is even complete, but no
    // success was recorded for it.
    project.write("release", "");
    wait_until("the orphan to finish", Duration::from_secs(20), || {
        std::fs::read_to_string(project.join("out/a.txt")).is_ok_and(|s| s.ends_with("done\n"))
    });
    let plan = project.test().args(["plan", "--json"]).run().json();
    assert_eq!(reasons(&plan, "a"), ["never_built"], "{plan}");
    assert!(
        reasons(&plan, "b").contains(&"never_built".to_owned()),
        "{plan}"
    );
    let out = project.test().args(["build", "--run-id", "after"]).run();
    assert_eq!(ran(&out.events("after")), names(&["a", "b"]));
    assert_eq!(out.read("out/b.txt"), "partial\ndone\n");
    project
        .test()
        .args(["build"])
        .stdout_contains("nothing to do")
        .run();
}

#[test]
fn killed_at_many_moments_the_next_build_matches_a_clean_one() {
    const N: usize = 16;
    let mut orchfile = String::from(
        "[phase.p0]\nrun = \"touch running/p0; cat src.txt > {output}; echo 0 >> {output}; rm running/p0\"\ninputs = [\"src.txt\"]\noutputs = [\"out/p0.txt\"]\n",
    );
    for i in 1..N {
        orchfile.push_str(&format!(
            "\n[phase.p{i}]\nneeds = [\"p{prev}\"]\nrun = \"touch running/p{i}; cat {{needs.p{prev}.outputs}} > {{output}}; echo {i} >> {{output}}; rm running/p{i}\"\noutputs = [\"out/p{i}.txt\"]\n",
            prev = i - 1
        ));
    }
    let expected = |version: usize, i: usize| {
        let mut s = format!("v{version}\n");
        for k in 0..=i {
            s.push_str(&format!("{k}\n"));
        }
        s
    };
    // Each command marks itself running: a command orphaned by the kill finishes on its
    // own, and must have before the next build writes the same output.
    let t = Test::new()
        .orchfile(&orchfile)
        .write("src.txt", "v0\n")
        .write("running/.keep", "");
    let project = t.project().clone();
    let idle = || {
        std::fs::read_dir(project.join("running"))
            .map(|d| d.flatten().all(|e| e.file_name() == ".keep"))
            .unwrap_or(true)
    };
    t.args(["build", "-j", "1"]).run();
    for (version, kill_after) in [(1, 1), (2, 4), (3, 7), (4, 11), (5, 15)] {
        project.write("src.txt", &format!("v{version}\n"));
        let mut child = project.test().args(["build", "-j", "1"]).spawn();
        // Kill once `kill_after` outputs hold the new version: mid-build, at a moment
        // that differs from round to round (between commands, during one, or while
        // results are being recorded).
        wait_until("the build to progress", Duration::from_secs(30), || {
            (0..N)
                .filter(|i| {
                    std::fs::read_to_string(project.join(&format!("out/p{i}.txt")))
                        .is_ok_and(|s| s.starts_with(&format!("v{version}\n")))
                })
                .count()
                >= kill_after
        });
        sigkill(child.id());
        let _ = child.wait();
        wait_until("the orphaned command to end", Duration::from_secs(30), idle);
        project.test().args(["build", "-j", "2"]).run();
        for i in 0..N {
            assert_eq!(
                project.read(&format!("out/p{i}.txt")),
                expected(version, i),
                "p{i} after a kill at {kill_after} outputs"
            );
        }
        project
            .test()
            .args(["build"])
            .stdout_contains("nothing to do")
            .run();
    }
}
