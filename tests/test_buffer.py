import jax
import jax.numpy as jnp
import numpy as np

from tdmpc_glass import buffer as replay

H = 3


def fill(lengths_per_env, capacity):
    """Write episodes of the given lengths (agent steps) into a buffer; obs encodes (episode id, pos)."""
    E = len(lengths_per_env)
    buf = replay.empty(capacity, E, obs_dim=2, act_dim=1)
    streams = []
    for e, lengths in enumerate(lengths_per_env):
        rows = []
        for ep, length in enumerate(lengths):
            rows += [(e * 1000 + ep, pos) for pos in range(length + 1)]  # reset row + one row per step
        streams.append(rows)
    n = min(len(s) for s in streams)
    obs = np.array([[s[t] for s in streams] for t in range(n)], np.float32)  # (n, E, 2)
    pos = obs[..., 1].astype(np.int32)
    action = obs[..., 1:2] * 10  # action/reward of row t equal to 10x/100x its pos: checks alignment
    reward = obs[..., 1] * 100
    for chunk in range(0, n, 7):  # several appends, some crossing the ring's end
        sl = slice(chunk, chunk + 7)
        buf = replay.add(buf, jnp.asarray(obs[sl]), jnp.asarray(action[sl]), jnp.asarray(reward[sl]),
                         jnp.asarray(pos[sl]))
    return buf


def check_slices(batch):
    obs = np.asarray(batch.obs)  # (H+1, B, 2)
    episode, pos = obs[..., 0], obs[..., 1]
    assert (episode == episode[0]).all(), "slice crosses an episode boundary"
    np.testing.assert_array_equal(pos, pos[0] + np.arange(H + 1)[:, None])
    np.testing.assert_array_equal(np.asarray(batch.action)[..., 0], pos[1:] * 10)
    np.testing.assert_array_equal(np.asarray(batch.reward), pos[1:] * 100)


def test_slices_never_cross_episode_boundaries_with_short_episodes():
    buf = fill([[4, 3, 5, 4, 6, 3, 4], [3, 3, 3, 3, 3, 3, 3, 3]], capacity=2 * 1000)
    for k in range(5):
        check_slices(replay.sample(buf, jax.random.PRNGKey(k), 512, H))


def test_slices_stay_valid_after_the_ring_wraps():
    buf = fill([[5] * 30, [4] * 40], capacity=2 * 37)  # 37 slots per env, far fewer than written
    assert int(buf.count) > 37
    batch = replay.sample(buf, jax.random.PRNGKey(0), 1024, H)
    check_slices(batch)
    # only the newest 37 rows per env may appear
    episodes = np.asarray(batch.obs)[0, :, 0]
    assert episodes.min() >= 0


def test_sampling_covers_the_valid_starts_uniformly():
    buf = fill([[10]], capacity=100)  # one episode: rows pos 0..10, valid starts pos 0..7
    starts = np.asarray(replay.sample(buf, jax.random.PRNGKey(0), 8000, H).obs)[0, :, 1]
    counts = np.bincount(starts.astype(int), minlength=11)
    assert counts[8:].sum() == 0
    assert counts[:8].min() > 800  # about 1000 each


def test_sampling_is_jittable_and_vmappable_over_seeds():
    bufs = [fill([[6, 6]], capacity=50), fill([[5, 7]], capacity=50)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *bufs)
    batch = jax.jit(jax.vmap(lambda b, k: replay.sample(b, k, 64, H)))(stacked, jax.random.split(jax.random.PRNGKey(0), 2))
    assert batch.obs.shape == (2, H + 1, 64, 2)
    for s in range(2):
        check_slices(jax.tree.map(lambda x: x[s], batch))


def test_longer_slices_and_their_episode_ids_for_the_glass_terms():
    """Issue 12 item 4/5: the Glass terms' own batch of longer slices (glass.slice_len = L frames) stays inside
    episodes, and slice_episodes names the episode of exactly the slices `sample` draws with the same key."""
    buf = fill([[30, 12, 40], [25, 50, 9]], capacity=400)
    key = jax.random.PRNGKey(5)
    L = 10
    batch = replay.sample(buf, key, 256, L - 1)
    obs = np.asarray(batch.obs)  # (L, B, 2)
    assert obs.shape == (L, 256, 2)
    assert (obs[..., 0] == obs[0, :, 0]).all()
    np.testing.assert_array_equal(obs[..., 1], obs[0, :, 1] + np.arange(L)[:, None])
    ids = np.asarray(replay.slice_episodes(buf, key, 256, L - 1))  # (B, 2) [env, linear row of the reset row]
    episode = obs[0, :, 0]  # e * 1000 + episode index within env e
    np.testing.assert_array_equal(ids[:, 0], episode // 1000)
    same_id = (ids[:, None, :] == ids[None, :, :]).all(-1)
    np.testing.assert_array_equal(same_id, episode[:, None] == episode[None, :])
    # the same key with the TD length gives the TD batch itself
    td = replay.sample(buf, key, 256, H)
    assert td.glass_obs is None and td.glass_episode is None and len(jax.tree.leaves(td)) == 3
