use super::arg_values::positive_finite;
use super::*;
use clap::CommandFactory;

#[test]
fn cli_definition_is_consistent() {
    Cli::command().debug_assert();
    let cli = Cli::try_parse_from(["cpflow", "ot", "--dims", "2,4", "--paper-2d"]).unwrap();
    match cli.command {
        Command::Ot(a) => {
            assert_eq!(a.dims, vec![2, 4]);
            assert!(a.paper_2d);
        }
        _ => panic!("expected ot"),
    }
    assert!(device(Some("tpu")).is_err());
    let args = "cpflow sample --model m --grid 3x4 --temperature 0.8 -o s.png";
    let cli = Cli::try_parse_from(args.split(' ')).unwrap();
    match cli.command {
        Command::Sample(a) => assert_eq!((a.grid, a.temperature), (Some((3, 4)), Some(0.8))),
        _ => panic!("expected sample"),
    }
    assert!(parse_grid("8").is_err() && parse_grid("0x2").is_err());
    // Sizes that allocate in proportion are bounded, with the limit in the message.
    assert!(parse_grid("64x64").is_ok());
    assert!(parse_grid("65x64").unwrap_err().contains("4096"));
    assert!(
        count_in::<2, 1000>("1001")
            .unwrap_err()
            .contains("at most 1000")
    );
    for bad in ["0", "-1", "nan", "inf", "x"] {
        assert!(positive_finite(bad).is_err(), "{bad}");
    }
    assert_eq!(positive_finite("2.5"), Ok(2.5));
}

/// `--dtype` is parsed once, by clap, for every command that takes it: `f16` is refused
/// as the arguments are read, naming the flag and the values it takes (each command
/// parsed its own string, and `train` named the config key `model.float`), and `f32`
/// reaches the command as the float type.
#[test]
fn every_dtype_flag_is_parsed_by_clap() {
    let commands: [&[&str]; 6] = [
        &["train"],
        &["eval", "--model", "m"],
        &["sample", "--model", "m", "-o", "s.npy"],
        &["plot", "--model", "m"],
        &["ot"],
        &[
            "import-reference",
            "--state-dict",
            "w",
            "--config",
            "c",
            "--out",
            "o",
        ],
    ];
    for args in commands {
        let line = |dtype: &'static str| [&["cpflow"], args, &["--dtype", dtype]].concat();
        let e = Cli::try_parse_from(line("f16")).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{args:?}");
        let e = e.to_string();
        assert!(
            e.contains("--dtype") && e.contains("'f16'") && e.contains("f32, f64"),
            "{args:?}: {e}"
        );
        let dtype = match Cli::try_parse_from(line("f32")).unwrap().command {
            Command::Train(a) => a.dev.dtype,
            Command::Eval(a) => a.dev.dtype,
            Command::Sample(a) => a.dev.dtype,
            Command::Plot(a) => a.dev.dtype,
            Command::Ot(a) => a.dev.dtype,
            Command::ImportReference(a) => a.dtype,
            Command::Vae(_) => panic!("vae takes no --dtype"),
        };
        assert_eq!(dtype, Some(crate::FloatType::F32), "{args:?}");
    }
}
