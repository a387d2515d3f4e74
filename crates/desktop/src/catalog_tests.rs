//! Tests of [`super`]: the estimates, the fit marks on pretend computers, the parsers, and
//! installed models in a cache laid out by hand as hf-hub lays it out (blobs + relative links).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn entry(repo: &str) -> CatalogEntry {
    catalog().into_iter().find(|e| e.repo == repo).unwrap()
}

#[test]
fn the_catalogue_has_every_size_and_variant_with_sane_estimates() {
    let c = catalog();
    assert_eq!(c.len(), 6);
    for size in ["2B", "4B", "8B"] {
        for variant in ["Instruct", "Thinking"] {
            let e = entry(&format!("Qwen/Qwen3-VL-{size}-{variant}"));
            assert_eq!((e.size.as_str(), e.variant.as_str()), (size, variant));
            validate_repo_id(&e.repo).unwrap();
            assert!(e.download_bytes > 2 * e.parameters, "bf16 weights and the tokenizer: {e:?}");
            assert!(e.memory_bytes > e.download_bytes, "{e:?}");
            assert!(e.cpu_memory_bytes > 2 * e.parameters * 2, "f32 is twice bf16: {e:?}");
        }
    }
    for w in c.windows(2) {
        assert!(w[0].parameters <= w[1].parameters && w[0].memory_bytes <= w[1].memory_bytes, "smallest first");
    }
    let p = |s: &str| entry(&format!("Qwen/Qwen3-VL-{s}-Instruct")).parameters as f64;
    assert!((p("2B") / 1e9 - 2.13).abs() < 0.01 && (p("4B") / 1e9 - 4.44).abs() < 0.01 && (p("8B") / 1e9 - 8.77).abs() < 0.01);
}

#[test]
fn fit_marks_for_pretend_computers() {
    let gpu8 = parse_memory_override("gpu=8GiB,ram=16GiB").unwrap();
    let cpu16 = parse_memory_override("ram=16GiB").unwrap();
    let big = parse_memory_override("gpu=80GiB,ram=64GiB").unwrap();
    let marks = |m: &DeviceMemory| ["2B", "4B", "8B"].map(|s| fit(&entry(&format!("Qwen/Qwen3-VL-{s}-Instruct")), m));
    assert_eq!(marks(&gpu8), [Fit::Gpu, Fit::TooBig, Fit::TooBig]);
    assert_eq!(marks(&cpu16), [Fit::Cpu, Fit::TooBig, Fit::TooBig]);
    assert_eq!(marks(&big), [Fit::Gpu, Fit::Gpu, Fit::Gpu]);
    assert_eq!(marks(&parse_memory_override("ram=64GiB").unwrap()), [Fit::Cpu, Fit::Cpu, Fit::Cpu]);
    assert_eq!(marks(&DeviceMemory::default()), [Fit::TooBig; 3], "nothing known: nothing fits");
    // The border: exactly the estimate fits, a byte less does not.
    let e = entry("Qwen/Qwen3-VL-4B-Thinking");
    assert_eq!(fit(&e, &DeviceMemory { gpu_bytes: Some(e.memory_bytes), ..Default::default() }), Fit::Gpu);
    assert_eq!(fit(&e, &DeviceMemory { gpu_bytes: Some(e.memory_bytes - 1), ram_bytes: e.cpu_memory_bytes, gpu_name: None }), Fit::Cpu);
    assert_eq!(serde_json::to_value(Fit::TooBig).unwrap(), "too_big");
}

#[test]
fn nvidia_smi_and_meminfo_parse() {
    assert_eq!(parse_nvidia_smi("NVIDIA GeForce RTX 3070, 8192\n"), Some(("NVIDIA GeForce RTX 3070".into(), 8192 * MIB)));
    assert_eq!(parse_nvidia_smi("\nNVIDIA H100 80GB HBM3, 81559\nNVIDIA H100 80GB HBM3, 81559\n").unwrap().1, 81559 * MIB);
    assert_eq!(parse_nvidia_smi("Odd, name, 4096").unwrap().0, "Odd, name");
    for bad in ["", "NVIDIA-SMI has failed", "GPU, [N/A]", ", 100"] {
        assert_eq!(parse_nvidia_smi(bad), None, "{bad:?}");
    }
    let meminfo = "MemTotal:       16318412 kB\nMemFree:         1234 kB\n";
    assert_eq!(parse_meminfo(meminfo), Some(16_318_412 * 1024));
    assert_eq!(parse_meminfo("MemFree: 1 kB\nMemTotal: 2 kB"), Some(2048));
    assert_eq!(parse_meminfo("MemFree: 1 kB"), None);
    assert_eq!(parse_meminfo("MemTotal: lots"), None);
}

#[test]
fn detected_memory_is_plausible_here() {
    let m = detect_memory();
    if cfg!(target_os = "linux") {
        assert!(m.ram_bytes > 64 * MIB, "{m:?}");
    }
    assert_eq!(m.gpu_name.is_some(), m.gpu_bytes.is_some());
}

#[test]
fn overrides_parse_and_bad_ones_say_why() {
    assert_eq!(
        parse_memory_override("gpu=8GiB,ram=16GiB").unwrap(),
        DeviceMemory { gpu_name: Some("simulated GPU".into()), gpu_bytes: Some(8 * GIB), ram_bytes: 16 * GIB }
    );
    assert_eq!(parse_memory_override(" RAM = 32 GiB ").unwrap(), DeviceMemory { ram_bytes: 32 * GIB, ..Default::default() });
    assert_eq!(parse_memory_override("ram=1.5GB").unwrap().ram_bytes, 1_500_000_000);
    assert_eq!(parse_memory_override("ram=4096").unwrap().ram_bytes, 4096);
    for bad in ["", "gpu", "gpu=8XB", "ram=-1GiB", "vram=8GiB", "ram=1GiB,ram=2GiB", "ram=1GiB,", "ram=1e400"] {
        let err = parse_memory_override(bad).unwrap_err();
        assert!(matches!(&err, DesktopError::InvalidArgument(m) if m.contains("gpu=8GiB")), "{bad:?}: {err}");
    }
}

#[cfg(unix)]
mod cache {
    use super::*;

    /// `models--org--name` laid out as hf-hub does: blobs named by etag, relative links from
    /// the snapshot, `refs/main` naming the commit; `files` are (name, contents).
    fn fake_repo(models: &Path, repo: &str, commit: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let root = models.join(format!("models--{}", repo.replace('/', "--")));
        let snap = root.join("snapshots").join(commit);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(root.join("blobs")).unwrap();
        std::fs::create_dir_all(root.join("refs")).unwrap();
        std::fs::write(root.join("refs/main"), commit).unwrap();
        for (i, (name, bytes)) in files.iter().enumerate() {
            let blob = format!("etag{i}{commit}");
            std::fs::write(root.join("blobs").join(&blob), bytes).unwrap();
            std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snap.join(name)).unwrap();
        }
        snap
    }

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sp-catalog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const INDEX: &[u8] = br#"{"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#;

    #[test]
    fn installed_models_are_found_sized_once_and_checked_for_completeness() {
        let models = temp("installed");
        let small = fake_repo(&models, "Qwen/Qwen3-VL-2B-Instruct", "c1", &[("config.json", b"{}".as_slice()), ("tokenizer.json", b"tok".as_slice()), ("model.safetensors", [7u8; 1000].as_slice())]);
        // Two snapshots sharing nothing; refs/main names the second.
        fake_repo(&models, "Qwen/Qwen3-VL-4B-Instruct", "old", &[("config.json", b"{}".as_slice())]);
        let sharded = fake_repo(
            &models,
            "Qwen/Qwen3-VL-4B-Instruct",
            "new",
            &[("config.json", b"{}".as_slice()), ("tokenizer.json", b"tok".as_slice()), ("model.safetensors.index.json", INDEX), ("model-00001-of-00002.safetensors", [1u8; 300].as_slice())],
        );
        // A half-downloaded part in blobs takes disk space too.
        std::fs::write(models.join("models--Qwen--Qwen3-VL-4B-Instruct/blobs/etag9.sync.part"), [0u8; 50]).unwrap();
        std::fs::create_dir(models.join("not-a-model")).unwrap();

        let found = installed(&models);
        assert_eq!(found.len(), 2, "{found:?}");
        let a = &found[0];
        assert_eq!((a.repo.as_deref(), a.name.as_str(), a.path.as_str()), (Some("Qwen/Qwen3-VL-2B-Instruct"), "Qwen/Qwen3-VL-2B-Instruct", small.to_str().unwrap()));
        assert_eq!(a.bytes, 2 + 3 + 1000 + 2, "blobs once, links not followed (+2: refs/main)");
        assert!(a.complete);
        let b = &found[1];
        assert_eq!(b.path, sharded.display().to_string(), "the snapshot refs/main names");
        assert!(!b.complete, "the index names a second shard that is missing");
        let expected: u64 = [2, 2, 3, INDEX.len() as u64, 300, 50, 3].iter().sum(); // 2 configs, tokenizer, index, shard, part, ref
        assert_eq!(b.bytes, expected);
        std::fs::write(models.join("models--Qwen--Qwen3-VL-4B-Instruct/blobs/s2"), [2u8; 10]).unwrap();
        std::os::unix::fs::symlink("../../blobs/s2", sharded.join("model-00002-of-00002.safetensors")).unwrap();
        assert!(installed(&models)[1].complete);
        // A dangling link is not a file.
        std::fs::remove_file(models.join("models--Qwen--Qwen3-VL-4B-Instruct/blobs/s2")).unwrap();
        assert!(!installed(&models)[1].complete);

        let mem = parse_memory_override("gpu=8GiB,ram=16GiB").unwrap();
        let r = rows(&mem, &installed(&models));
        assert_eq!(r.len(), catalog().len());
        let two = r.iter().find(|r| r.entry.repo == "Qwen/Qwen3-VL-2B-Instruct").unwrap();
        assert_eq!((two.fit, two.installed.as_ref().map(|m| m.bytes)), (Fit::Gpu, Some(a.bytes)));
        assert!(r.iter().find(|r| r.entry.repo == "Qwen/Qwen3-VL-8B-Thinking").unwrap().installed.is_none());
        let json = serde_json::to_value(two).unwrap();
        assert_eq!(json["repo"], "Qwen/Qwen3-VL-2B-Instruct", "the entry is flattened: {json}");
        assert_eq!(json["fit"], "gpu");

        assert_eq!(delete_installed(&models, "Qwen/Qwen3-VL-2B-Instruct").unwrap(), a.bytes);
        assert!(!models.join("models--Qwen--Qwen3-VL-2B-Instruct").exists());
        assert_eq!(installed(&models).len(), 1);
        assert!(matches!(delete_installed(&models, "Qwen/Qwen3-VL-2B-Instruct"), Err(DesktopError::InvalidArgument(_))));
        let _ = std::fs::remove_dir_all(&models);
    }

    #[test]
    fn delete_refuses_bad_ids_and_anything_outside_the_cache() {
        let models = temp("delete");
        let outside = temp("delete-outside");
        std::fs::write(outside.join("precious"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, models.join("models--evil--link")).unwrap();
        for bad in ["../x", "a/b/c", "..", "org/..", "", "a", "/etc/passwd"] {
            assert!(matches!(delete_installed(&models, bad), Err(DesktopError::InvalidArgument(_))), "{bad:?}");
        }
        assert!(delete_installed(&models, "evil/link").is_err());
        assert!(outside.join("precious").exists());
        assert!(installed(&models.join("missing")).is_empty());
        let _ = std::fs::remove_dir_all(&models);
        let _ = std::fs::remove_dir_all(&outside);
    }
}
