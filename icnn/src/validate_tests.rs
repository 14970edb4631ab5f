//! Every ICNN configuration's `validate` refuses exactly what its constructor refuses.

use std::fmt::Debug;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::{
    ConvIcnn, ConvIcnn2, ConvIcnn2Config, ConvIcnn3, ConvIcnn3Config, ConvIcnnConfig, DenseIcnn2,
    DenseIcnn2Config, Icnn, Icnn2, Icnn2Config, Icnn3, Icnn3Config, IcnnConfig, ImageShape, Picnn,
    PicnnConfig, Result,
};

/// `validate` and the constructor give the same answer (the same message when they
/// refuse), `refused` says which, and a refused configuration builds nothing.
fn same_answer<C: Debug>(
    config: &C,
    refused: bool,
    validate: impl Fn(&C) -> Result<()>,
    build: impl Fn(VarBuilder, &C, &mut StdRng) -> Result<()>,
) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let built = build(vb.pp("net"), config, &mut StdRng::seed_from_u64(0));
    let message = |r: Result<()>| r.err().map(|e| e.to_string());
    let (validated, built) = (message(validate(config)), message(built));
    assert_eq!(validated, built, "{config:?}");
    assert_eq!(validated.is_some(), refused, "{config:?}: {validated:?}");
    if refused {
        assert!(
            varmap.all_vars().is_empty(),
            "{config:?}: built before refusing"
        );
    }
}

/// Every architecture: the defaults pass; a zero size, an odd width (where the
/// architecture halves it), an absurd depth and an image without pixels are refused by
/// `validate` exactly as by the constructor.
#[test]
fn validate_refuses_what_the_constructors_refuse() {
    let huge = 100_000_000;
    let d = IcnnConfig::default();
    for (c, refused) in [
        (d.clone(), false),
        (
            IcnnConfig {
                dim: 0,
                ..d.clone()
            },
            true,
        ),
        (
            IcnnConfig {
                width: 0,
                ..d.clone()
            },
            true,
        ),
        (IcnnConfig { depth: huge, ..d }, true),
    ] {
        same_answer(&c, refused, IcnnConfig::validate, |vb, c, r| {
            Icnn::new(vb, c, r).map(drop)
        });
    }
    let d = Icnn2Config::default();
    for (c, refused) in [
        (d.clone(), false),
        (
            Icnn2Config {
                width: 0,
                ..d.clone()
            },
            true,
        ),
        (
            Icnn2Config {
                depth: 0,
                ..d.clone()
            },
            true,
        ),
        (Icnn2Config { depth: huge, ..d }, true),
    ] {
        same_answer(&c, refused, Icnn2Config::validate, |vb, c, r| {
            Icnn2::new(vb, c, r).map(drop)
        });
    }
    let d = Icnn3Config::default();
    for (c, refused) in [
        (d.clone(), false),
        (
            Icnn3Config {
                dim: 0,
                ..d.clone()
            },
            true,
        ),
        (
            Icnn3Config {
                width: 0,
                ..d.clone()
            },
            true,
        ),
        (
            Icnn3Config {
                width: 5,
                ..d.clone()
            },
            true,
        ),
        (
            Icnn3Config {
                depth: huge,
                ..d.clone()
            },
            true,
        ),
    ] {
        same_answer(&c, refused, Icnn3Config::validate, |vb, c, r| {
            Icnn3::new(vb, c, r).map(drop)
        });
    }
    let odd = Icnn3Config { width: 5, ..d };
    assert_eq!(
        odd.validate().unwrap_err().to_string(),
        "invalid configuration: Icnn3 needs an even width, got 5"
    );
    let d = DenseIcnn2Config::default();
    for (c, refused) in [
        (d.clone(), false),
        (
            DenseIcnn2Config {
                width: 0,
                ..d.clone()
            },
            true,
        ),
        (
            DenseIcnn2Config {
                depth: 0,
                ..d.clone()
            },
            true,
        ),
        (DenseIcnn2Config { depth: huge, ..d }, true),
    ] {
        same_answer(&c, refused, DenseIcnn2Config::validate, |vb, c, r| {
            DenseIcnn2::new(vb, c, r).map(drop)
        });
    }
    let d = PicnnConfig::default();
    for (c, refused) in [
        (d.clone(), false),
        (
            PicnnConfig {
                context_dim: 0,
                ..d.clone()
            },
            true,
        ),
        (
            PicnnConfig {
                width: 0,
                ..d.clone()
            },
            true,
        ),
        (PicnnConfig { depth: huge, ..d }, true),
    ] {
        same_answer(&c, refused, PicnnConfig::validate, |vb, c, r| {
            Picnn::new(vb, c, r).map(drop)
        });
    }
    // Conv networks: small images keep the defaults' widths and depths cheap to build.
    let image = ImageShape::new(1, 6, 6);
    let no_pixels = ImageShape::new(1, 0, 6);
    let d = ConvIcnnConfig {
        image,
        ..Default::default()
    };
    for (c, refused) in [
        (d.clone(), false),
        (
            ConvIcnnConfig {
                image: ImageShape::new(0, 6, 6),
                ..d.clone()
            },
            true,
        ),
        (
            ConvIcnnConfig {
                width: 0,
                ..d.clone()
            },
            true,
        ),
        (
            ConvIcnnConfig {
                num_pooling: huge,
                ..d.clone()
            },
            true,
        ),
        (
            ConvIcnnConfig {
                image: no_pixels,
                ..d
            },
            true,
        ),
    ] {
        same_answer(&c, refused, ConvIcnnConfig::validate, |vb, c, r| {
            ConvIcnn::new(vb, c, r).map(drop)
        });
    }
    let d = ConvIcnn2Config {
        image,
        ..Default::default()
    };
    for (c, refused) in [
        (d.clone(), false),
        (
            ConvIcnn2Config {
                depth: 0,
                ..d.clone()
            },
            true,
        ),
        (
            ConvIcnn2Config {
                width: 3,
                ..d.clone()
            },
            true,
        ),
        (
            ConvIcnn2Config {
                depth: huge,
                ..d.clone()
            },
            true,
        ),
        (
            ConvIcnn2Config {
                image: no_pixels,
                ..d
            },
            true,
        ),
    ] {
        same_answer(&c, refused, ConvIcnn2Config::validate, |vb, c, r| {
            ConvIcnn2::new(vb, c, r).map(drop)
        });
    }
    let d = ConvIcnn3Config {
        image,
        ..Default::default()
    };
    for (c, refused) in [
        (d.clone(), false),
        (
            ConvIcnn3Config {
                width: 0,
                ..d.clone()
            },
            true,
        ),
        (
            ConvIcnn3Config {
                width: 7,
                ..d.clone()
            },
            true,
        ),
        (
            ConvIcnn3Config {
                depth: huge,
                ..d.clone()
            },
            true,
        ),
        (
            ConvIcnn3Config {
                image: no_pixels,
                ..d.clone()
            },
            true,
        ),
    ] {
        same_answer(&c, refused, ConvIcnn3Config::validate, |vb, c, r| {
            ConvIcnn3::new(vb, c, r).map(drop)
        });
    }
    let empty = ConvIcnn3Config {
        image: no_pixels,
        ..d
    };
    assert_eq!(
        empty.validate().unwrap_err().to_string(),
        "invalid configuration: empty image shape \
         ImageShape { channels: 1, height: 0, width: 6 }"
    );
}

/// Images whose `C·H·W` (or a layer's `(C + width)·H·W`) overflows, and convolution
/// geometries whose padded size overflows, are configuration errors: `ImageShape::dim` and
/// `ConvGeometry::output_len` panicked with "attempt to multiply with overflow" (and wrapped
/// around in release builds), and `validate` accepted such images, whose constructors then
/// panicked.
#[test]
fn overflowing_images_and_geometries_are_refused() {
    use crate::ActivationKind;
    let absurd = [
        ImageShape::new(3, 1 << 40, 1 << 40),
        ImageShape::new(1, 1 << 33, 1 << 33),
        // C·H·W fits in usize but not in memory.
        ImageShape::new(1, 1 << 31, 1 << 31),
    ];
    for image in absurd {
        let refused = |r: Result<()>| match r {
            Err(crate::IcnnError::InvalidConfig(m)) => assert!(m.contains("fit in memory"), "{m}"),
            other => panic!("{image:?}: unexpected {other:?}"),
        };
        let c1 = ConvIcnnConfig {
            image,
            ..Default::default()
        };
        let c2 = ConvIcnn2Config {
            image,
            ..Default::default()
        };
        let c3 = ConvIcnn3Config {
            image,
            activation: ActivationKind::GaussianSoftplus,
            ..Default::default()
        };
        refused(c1.validate());
        refused(c2.validate());
        refused(c3.validate());
        same_answer(&c1, true, ConvIcnnConfig::validate, |vb, c, r| {
            ConvIcnn::new(vb, c, r).map(drop)
        });
        same_answer(&c2, true, ConvIcnn2Config::validate, |vb, c, r| {
            ConvIcnn2::new(vb, c, r).map(drop)
        });
        same_answer(&c3, true, ConvIcnn3Config::validate, |vb, c, r| {
            ConvIcnn3::new(vb, c, r).map(drop)
        });
    }
    assert_eq!(absurd[0].checked_dim(), None);
    assert_eq!(absurd[0].dim(), usize::MAX);
    assert_eq!(absurd[2].checked_dim(), Some(1 << 62));
    assert_eq!(ImageShape::new(3, 32, 32).checked_dim(), Some(3072));
    // A padding whose padded size overflows: an error, not a panic.
    let g = crate::ConvGeometry {
        kernel: 3,
        stride: 1,
        padding: usize::MAX / 2 + 1,
    };
    assert!(matches!(
        g.output_len(28),
        Err(crate::IcnnError::InvalidConfig(_))
    ));
    assert_eq!(
        crate::ConvGeometry::SAME_3X3.output_hw((28, 20)).unwrap(),
        (28, 20)
    );
}
