"""SolidDrag's warp (dragkit.solid): pure functions on small tensors with exact expectations."""

import torch

from dragkit.solid import (connected_component, fill_from_background, object_core, otsu_threshold, solid_warp,
                           translate_core)


def test_fill_interpolates_the_nearest_sources_by_inverse_distance():
    z = torch.zeros(1, 1, 1, 7)
    z[0, 0, 0, 0], z[0, 0, 0, 6] = 1.0, 7.0
    holes = torch.zeros(1, 7, dtype=torch.bool)
    holes[0, 1:6] = True
    out = fill_from_background(z, holes, ~holes)
    torch.testing.assert_close(out[0, 0, 0], torch.arange(1.0, 8.0))  # 1/d weights between 1 and 7: a ramp


def test_fill_never_reads_a_non_source_and_is_symmetric_in_all_four_directions():
    z = torch.arange(25.0).view(1, 1, 5, 5)
    holes = torch.zeros(5, 5, dtype=torch.bool)
    holes[2, 2] = True
    sources = ~holes
    sources[2, 1] = False  # the left neighbour is a moved object: not a source → the next one left is used
    out = fill_from_background(z, holes, sources)
    expected = (z[0, 0, 2, 0] / 2 + z[0, 0, 2, 3] + z[0, 0, 1, 2] + z[0, 0, 3, 2]) / (1 / 2 + 3)
    torch.testing.assert_close(out[0, 0, 2, 2], expected)
    assert torch.equal(out[0, 0][~holes], z[0, 0][~holes])  # nothing but holes changes


def test_a_hole_with_no_source_in_any_direction_keeps_its_value():
    z = torch.full((1, 2, 3, 3), 4.0)
    holes = torch.ones(3, 3, dtype=torch.bool)
    assert torch.equal(fill_from_background(z, holes, torch.zeros(3, 3, dtype=torch.bool)), z)


def test_connected_component_is_four_connected_and_empty_outside_the_mask():
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[1:3, 1:3] = True
    mask[3, 3] = True  # touches (2, 2) diagonally only
    comp = connected_component(mask, (1, 1))
    assert int(comp.sum()) == 4 and not comp[3, 3]
    assert not connected_component(mask, (5, 5)).any()


def test_otsu_splits_two_clusters():
    values = torch.cat([torch.full((100,), 0.1), torch.full((40,), 0.9)])
    assert 0.1 < otsu_threshold(values) <= 0.9
    assert otsu_threshold(torch.full((5,), 0.25)) == 0.25


def test_integer_translation_moves_a_core_exactly_and_a_fractional_one_keeps_its_area():
    z = torch.zeros(1, 1, 8, 8)
    z[0, 0, 1:3, 1:4] = 5.0
    core = z[0, 0] > 0
    value, coverage = translate_core(z, core, torch.tensor([3.0, 2.0]))
    assert torch.equal(coverage, torch.roll(core, (3, 2), (0, 1)).float())
    assert torch.equal(value[0][coverage > 0], torch.full((6,), 5.0))  # the core's values only, no blending
    value, coverage = translate_core(z, core, torch.tensor([0.3, 0.6]))
    torch.testing.assert_close(coverage.sum(), torch.tensor(6.0))  # the splat keeps the area
    torch.testing.assert_close(value[0][coverage > 0], torch.full((int((coverage > 0).sum()),), 5.0))
    rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    centroid = torch.stack([(rows * coverage).sum(), (cols * coverage).sum()]) / coverage.sum()
    torch.testing.assert_close(centroid, torch.tensor([1.5 + 0.3, 2.0 + 0.6]))  # moved by exactly the sub-pixel drag


def test_the_first_handle_lies_on_top_where_two_cores_land():
    z = torch.zeros(1, 1, 5, 5)
    z[0, 0, 1, 0], z[0, 0, 1, 2] = 1.0, 2.0
    region = torch.ones(5, 5, dtype=torch.bool)
    result = solid_warp(z, torch.cat([z[0], 1 - z[0].clamp(max=1)]), region, torch.tensor([[1.0, 0.0], [1.0, 2.0]]),
                        torch.tensor([[1.0, 1.0], [1.0, 1.0]]), threshold=0.5)
    assert result.solid == [True, True] and result.latent[0, 0, 1, 1] == 1.0


def _scene(size=12):
    """A 2-channel latent: a 3×3 object (feature (1, 0)) on a background (feature (0, 1)) with a ramp in channel 1."""
    z = torch.zeros(1, 2, size, size)
    z[0, 1] = torch.linspace(0.5, 1.5, size)[None, :].expand(size, size)
    z[0, 0, 3:6, 2:5], z[0, 1, 3:6, 2:5] = 1.0, 0.0
    return z


def test_object_core_finds_the_object_under_the_handle_inside_the_region():
    z = _scene()
    region = torch.zeros(12, 12, dtype=torch.bool)
    region[1:8, 1:11] = True
    core = object_core(z[0], torch.tensor([4.0, 3.0]), region)
    assert torch.equal(core, z[0, 0] > 0)


def test_solid_warp_moves_the_object_whole_and_fills_its_old_place_from_the_background():
    z = _scene()
    region = torch.zeros(12, 12, dtype=torch.bool)
    region[1:8, 1:11] = True
    result = solid_warp(z, z[0], region, torch.tensor([[4.0, 3.0]]), torch.tensor([[4.0, 8.0]]))
    assert result.solid == [True]
    moved = torch.zeros(12, 12, dtype=torch.bool)
    moved[3:6, 7:10] = True
    assert torch.equal(result.moved, moved)
    assert torch.equal(result.latent[0, 0] > 0.5, moved)  # the object is where it was sent, and only there
    hole = result.holes
    assert torch.equal(hole, (z[0, 0] > 0) & ~moved)
    assert (result.latent[0, 1][hole] > 0.4).all()  # background-like values, not the object's 0


def test_a_handle_on_featureless_content_falls_back():
    z = torch.ones(1, 2, 6, 6)
    region = torch.ones(6, 6, dtype=torch.bool)
    result = solid_warp(z, z[0], region, torch.tensor([[2.0, 2.0]]), torch.tensor([[2.0, 4.0]]))
    assert result.solid == [False] and torch.equal(result.latent, z)
