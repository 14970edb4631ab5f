//! The sample grid: `write_sample_grid`'s PNG size, cell layout, grey and RGB pixels, and
//! pixel quantisation.

use candle_core::{Device, Tensor};

use super::temp_dir;

#[test]
fn sample_grid_png_has_the_right_size_and_pixels() {
    use cpflow::image::grid::GRID_BACKGROUND;
    use cpflow::image::{grid_size, quantize_pixels, write_sample_grid};
    let dir = temp_dir("grid");
    // 5 grey 6×5 images in a 2×3 grid: image i is uniformly i/4.
    let v: Vec<f32> = (0..5).flat_map(|i| vec![i as f32 / 4.0; 30]).collect();
    let imgs = Tensor::from_vec(v, (5, 1, 6, 5), &Device::Cpu).unwrap();
    let p = dir.join("g.png");
    write_sample_grid(&imgs, 2, 3, &p).unwrap();
    let png = cpflow::image_file::read_rgb8(&p).unwrap();
    let (w, h) = grid_size(2, 3, 6, 5);
    assert_eq!((png.width as usize, png.height as usize), (w, h));
    assert_eq!((w, h), (3 * 5 + 4 * 2, 2 * 6 + 3 * 2));
    // Image 3 (row 1, column 0) starts at x = 2, y = 2 + 8; image 4 (row 1, column 1) at
    // x = 2 + 7; the sixth cell is empty.
    assert_eq!(png.pixel(2, 10)[0], 191); // round(255·0.75)
    assert_eq!(png.pixel(9, 10)[0], 255);
    assert_eq!(png.pixel(3, 2)[0], 0); // image 0
    assert_eq!(png.pixel(0, 0)[0], GRID_BACKGROUND);
    assert_eq!(png.pixel(2 + 2 * 7, 2 + 8)[0], GRID_BACKGROUND);
    // RGB: channel planes land in R, G, B.
    let rgb = Tensor::from_vec(
        [vec![1.0f32; 4], vec![0.0; 4], vec![0.5; 4]].concat(),
        (1, 3, 2, 2),
        &Device::Cpu,
    )
    .unwrap();
    write_sample_grid(&rgb, 1, 1, &p).unwrap();
    let png = cpflow::image_file::read_rgb8(&p).unwrap();
    assert_eq!(png.dimensions(), (6, 6));
    assert_eq!(png.pixel(2, 2), [255, 0, 128]);
    // Too many images, bad channel count.
    assert!(write_sample_grid(&imgs, 2, 2, &p).is_err());
    let two = Tensor::zeros((1, 2, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(write_sample_grid(&two, 1, 1, &p).is_err());
    // Quantisation: ⌊256·x⌋/255.
    let q = quantize_pixels(&Tensor::new(&[0.0f64, 0.5, 0.999], &Device::Cpu).unwrap()).unwrap();
    assert_eq!(q.to_vec1::<f64>().unwrap(), vec![0.0, 128.0 / 255.0, 1.0]);
    std::fs::remove_dir_all(&dir).unwrap();
}
