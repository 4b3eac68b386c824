"""The scene renderer's physics: pixel footprints, blur, the face model and spot dilution."""

from __future__ import annotations

import math

import numpy as np
import pytest

from host.sim import scene as sm


def test_pixel_footprint_follows_the_lens():
    lens = sm.Lens(55)
    assert lens.pixel_size_m(0.5) == pytest.approx(2 * 0.5 * math.tan(math.radians(27.5)) / 32)
    assert sm.Lens(110).pixel_size_m(0.5) > 2.5 * lens.pixel_size_m(0.5)
    # the optical axis lands between the four centre pixels
    assert lens.to_pixel(0.0, 0.0, 1.0) == pytest.approx((16.0, 12.0))
    # the edge of the field of view lands on the image edge
    col, row = lens.to_pixel(math.tan(math.radians(27.5)), math.tan(math.radians(17.5)), 1.0)
    assert (col, row) == pytest.approx((32.0, 0.0))
    with pytest.raises(ValueError, match="fov_deg"):
        sm.Lens(90)


def test_footprint_integration_conserves_mean_radiance_and_temperature():
    lens = sm.Lens(55, psf_sigma_px=0.0)
    rng = np.random.default_rng(3)
    canvas = rng.uniform(20.0, 60.0, size=(len(lens.tan_y), len(lens.tan_x)))
    image = sm.integrate(lens, canvas)
    assert image.shape == (24, 32)
    assert sm.to_radiance(image).mean() == pytest.approx(sm.to_radiance(canvas).mean(), rel=1e-12)
    # in temperature the mean is kept to within the T^4 curvature: small over a face's range
    face = rng.uniform(30.0, 37.0, size=canvas.shape)
    assert abs(sm.integrate(lens, face).mean() - face.mean()) < 0.05
    # each pixel is the radiance mean of exactly its own supersamples
    s = lens.supersample
    block = canvas[s * 5:s * 6, s * 7:s * 8]
    assert image[5, 7] == pytest.approx(float(sm.from_radiance(sm.to_radiance(block).mean())))


def test_blur_spreads_a_point_and_keeps_its_energy():
    ambient = 25.0
    sharp, blurred = sm.Lens(55, psf_sigma_px=0.0), sm.Lens(55)
    images = []
    for lens in (sharp, blurred):
        canvas = np.full((len(lens.tan_y), len(lens.tan_x)), ambient)
        m, s = lens.margin, lens.supersample
        canvas[m + 12 * s:m + 13 * s, m + 16 * s:m + 17 * s] = 80.0  # one pixel's worth of hot surface
        images.append(sm.integrate(lens, canvas))
    sharp_img, blurred_img = images
    assert sharp_img[12, 16] == pytest.approx(80.0) and sharp_img[12, 15] == pytest.approx(ambient)
    assert blurred_img[12, 16] < 80.0 - 5.0  # the PSF takes energy out of the pixel...
    assert blurred_img[12, 15] > ambient + 1.0 and blurred_img[11, 16] > ambient + 1.0  # ...into its neighbours
    excess = lambda img: (sm.to_radiance(img) - sm.to_radiance(ambient)).sum()  # noqa: E731
    assert excess(blurred_img) == pytest.approx(excess(sharp_img), rel=1e-3)


def _canvas_of(person: sm.Person, ambient: float = 24.0) -> np.ndarray:
    lens = sm.Lens(55, supersample=16)
    canvas = np.full((len(lens.tan_y), len(lens.tan_x)), ambient)
    sm.draw_person(canvas, lens, person, person.x_offset_m, 0.25, ambient)
    return canvas


def test_face_model_regions():
    person = sm.Person(skin_c=36.0, distance_m=0.25, hair_drop_c=6.0, clothing_above_ambient_c=3.0)
    values = set(np.round(np.unique(_canvas_of(person)), 3))
    assert max(values) == 36.0  # inner canthi
    for expected in (36.0 - 0.8, 36.0 - 1.5, 36.0 - 6.0, 24.0):  # forehead, cheeks, hair, wall
        assert expected in values
    with_glasses = _canvas_of(sm.Person(skin_c=36.0, distance_m=0.25, glasses=True))
    # opaque glass hides the canthi: the forehead becomes the hottest skin
    assert with_glasses.max() == pytest.approx(36.0 - 0.8)
    assert (np.round(with_glasses, 3) == 24.0 + 3.0).sum() > 100  # the lenses, ambient + 3


def test_subject_walks_up_stops_and_leaves():
    person = sm.Person(skin_c=36.0, distance_m=0.5, x_offset_m=0.1, arrive_s=5.0, dwell_s=2.0)
    assert person.position(5.0 - sm.approach_s() - 0.01) is None
    far = person.position(4.0)
    assert far is not None and far[1] == pytest.approx(0.5 + sm.WALK_SPEED_MPS)
    assert person.position(6.0) == (0.1, 0.5)
    leaving = person.position(7.5)
    assert leaving is not None and leaving[0] > 0.1 and leaving[1] == 0.5
    assert person.position(7.0 + sm.LEAVE_S + 0.01) is None


def test_hottest_region_dilution_grows_with_distance():
    distances = [0.3, 0.5, 0.8, 1.0, 1.5]
    table = sm.dilution_table(distances)
    for key in ("top1_drop_c", "top4_drop_c"):
        drops = [row[key] for row in table]
        assert all(b >= a - 0.02 for a, b in zip(drops, drops[1:])), (key, drops)
        assert drops[-1] > drops[0] + 0.3, (key, drops)
        assert 0.0 < drops[0] < 1.5
    # a wide lens spreads the face over fewer pixels: more dilution at the same distance
    wide = sm.dilution_table([0.8], fov_deg=110)[0]
    assert wide["top4_drop_c"] > table[2]["top4_drop_c"] + 0.5


def test_distractors_and_blackbody_render_where_placed():
    lens = sm.Lens(55)
    scene = sm.Scene(lens, 24.0, distractors=[sm.Distractor("cup", 60.0, 26.5, 19.5)],
                     blackbody=sm.Blackbody(35.0, 28, 1, 3))
    image, info = scene.render(0.0)
    assert image[19, 26] == pytest.approx(60.0, abs=0.3)  # the cup covers its centre pixel
    assert image[2, 29] == pytest.approx(35.0, abs=0.05)  # the blackbody's inner pixel
    assert image[12, 10] == pytest.approx(24.0)
    assert info.visible_subjects == []
    # a subject standing in front of the blackbody hides it (it stands 3 m away)
    bb_x = (29.5 / 32 * 2 - 1) * lens.tan_half_x * 0.6
    hidden = sm.Scene(lens, 24.0, people=[sm.Person(36.0, 0.6, x_offset_m=bb_x, arrive_s=0.0, dwell_s=5.0)],
                      blackbody=sm.Blackbody(35.0, 28, 10, 3))
    image, info = hidden.render(1.0)
    assert info.visible_subjects == [0]
    assert abs(image[11, 29] - 35.0) > 1.0
