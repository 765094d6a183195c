import hyperspy.api as hs

import fusex
import fusex.io

ds = fusex.io.read("tem-eds.hspy", haadf="tem-haadf.hspy")
print(ds.attrs["source"])
print(ds["maps"].dtype, dict(ds["maps"].sizes), ds["maps"].attrs.get("units"))
out = fusex.fuse(ds)
print("saturated HAADF pixels left out:", out.attrs["saturated_pixels"])
print("counts per element, raw:", out["raw"].sum(("y", "x")).values)
print("counts per element, fused:", out["maps"].sum(("y", "x")).values.round(1))

# the same from HyperSpy signals (lazy ones stay lazy), and back
eds, haadf = hs.load("tem-eds.hspy"), hs.load("tem-haadf.hspy")
again = fusex.fuse(fusex.io.from_hyperspy(eds, haadf))
signals = fusex.io.to_hyperspy(again)
print([(s.metadata.General.title, s.metadata.Signal.signal_type) for s in signals])
