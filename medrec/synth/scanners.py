"""Scanner profiles: what differs between the synthetic manufacturers.

Each profile sets the header identity (manufacturer, model, institution), the acquisition
geometry (field of view, hence pixel spacing; slice thickness), the noise level and how real-world
values are stored (signedness, bits stored, rescale slope / intercept, MR / XR gain, photometric
interpretation). Sites sample a profile per patient with the given weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScannerProfile:
    """One synthetic scanner model at one site.

    Attributes:
        manufacturer / model_name / institution / station_name / software_versions: header identity.
        weight: relative probability that a patient is scanned here.
        field_of_view_mm: in-plane field of view; PixelSpacing = field_of_view_mm / image_size.
        slice_thickness_mm: slice thickness (and spacing) of the main axial series (3D kinds).
        noise: noise standard deviation in modality units at noise multiplier 1 (HU for CT,
            fraction of white-matter signal for MR, attenuation units for XR).
        pixel_representation: 0 unsigned, 1 signed (two's complement).
        bits_stored: BitsStored (BitsAllocated is always 16).
        rescale_slope / rescale_intercept: real-world = stored * slope + intercept.
        write_rescale: whether RescaleSlope / RescaleIntercept appear in the header (always for CT and DX).
        gain: real-world units per modality unit (MR arbitrary units per unit signal; XR values per
            attenuation unit); 1 for CT.
        offset: real-world value of zero signal / attenuation (XR).
        photometric: MONOCHROME2, or MONOCHROME1 (XR: stored values inverted).
        kernel: ConvolutionKernel (CT) or sequence name (MR).
        extra: further modality-specific header values (kVp, field strength, TR / TE, ...).
    """

    manufacturer: str
    model_name: str
    institution: str
    station_name: str
    software_versions: str
    weight: float
    field_of_view_mm: float
    slice_thickness_mm: float
    noise: float
    pixel_representation: int
    bits_stored: int
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    write_rescale: bool = True
    gain: float = 1.0
    offset: float = 0.0
    photometric: str = "MONOCHROME2"
    kernel: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def stored_range(self) -> tuple[int, int]:
        """Smallest and largest storable value."""
        if self.pixel_representation:
            return -(2 ** (self.bits_stored - 1)), 2 ** (self.bits_stored - 1) - 1
        return 0, 2**self.bits_stored - 1


CT_SCANNERS: tuple[ScannerProfile, ...] = (
    ScannerProfile(
        manufacturer="SIEMENS",
        model_name="SOMATOM Definition AS+",
        institution="Phantom General Hospital",
        station_name="CTAWP91001",
        software_versions="syngo CT VA48A",
        weight=0.45,
        field_of_view_mm=360.0,
        slice_thickness_mm=5.0,
        noise=11.0,
        pixel_representation=0,
        bits_stored=12,
        rescale_intercept=-1024.0,
        kernel="B30f",
        extra={"kvp": 120, "tube_current": 210, "exposure_time": 500, "filter_type": "FLAT", "sharp_kernel": "B70f"},
    ),
    ScannerProfile(
        manufacturer="GE MEDICAL SYSTEMS",
        model_name="LightSpeed VCT",
        institution="Synthetic University Medical Center",
        station_name="GECT64",
        software_versions="07MW18.4",
        weight=0.35,
        field_of_view_mm=340.0,
        slice_thickness_mm=3.75,
        noise=15.0,
        pixel_representation=1,
        bits_stored=16,
        rescale_intercept=-1024.0,
        kernel="STANDARD",
        extra={"kvp": 120, "tube_current": 300, "exposure_time": 700, "filter_type": "BODY FILTER",
               "sharp_kernel": "LUNG"},
    ),
    ScannerProfile(
        manufacturer="TOSHIBA",
        model_name="Aquilion ONE",
        institution="Phantom Regional Clinic",
        station_name="TSB0001",
        software_versions="V6.00ER004",
        weight=0.20,
        field_of_view_mm=380.0,
        slice_thickness_mm=4.0,
        noise=13.0,
        pixel_representation=1,
        bits_stored=16,
        rescale_intercept=0.0,
        kernel="FC08",
        extra={"kvp": 120, "tube_current": 250, "exposure_time": 500, "filter_type": "LARGE", "sharp_kernel": "FC52"},
    ),
)

MR_SCANNERS: tuple[ScannerProfile, ...] = (
    ScannerProfile(
        manufacturer="SIEMENS",
        model_name="Skyra",
        institution="Phantom General Hospital",
        station_name="MRC45012",
        software_versions="syngo MR E11",
        weight=0.45,
        field_of_view_mm=230.0,
        slice_thickness_mm=4.0,
        noise=0.035,
        pixel_representation=0,
        bits_stored=12,
        write_rescale=False,
        gain=1000.0,
        kernel="*tfl3d1_16ns",
        extra={"field_strength": 3.0, "frequency": 123.2, "tr": 2300.0, "te": 2.3, "ti": 900.0, "flip": 8.0},
    ),
    ScannerProfile(
        manufacturer="GE MEDICAL SYSTEMS",
        model_name="SIGNA HDxt",
        institution="Synthetic University Medical Center",
        station_name="GEMR15",
        software_versions="15_LX_MR",
        weight=0.35,
        field_of_view_mm=240.0,
        slice_thickness_mm=5.0,
        noise=0.05,
        pixel_representation=0,
        bits_stored=16,
        write_rescale=False,
        gain=2800.0,
        kernel="efgre3d",
        extra={"field_strength": 1.5, "frequency": 63.9, "tr": 8.6, "te": 3.2, "ti": 450.0, "flip": 12.0},
    ),
    ScannerProfile(
        manufacturer="Philips Medical Systems",
        model_name="Ingenia",
        institution="Phantom Regional Clinic",
        station_name="PHMR3T",
        software_versions="5.4.1",
        weight=0.20,
        field_of_view_mm=220.0,
        slice_thickness_mm=4.5,
        noise=0.04,
        pixel_representation=0,
        bits_stored=12,
        rescale_slope=2.5,
        rescale_intercept=0.0,
        write_rescale=True,
        gain=1500.0,
        kernel="T1TFE",
        extra={"field_strength": 3.0, "frequency": 127.8, "tr": 8.1, "te": 3.7, "ti": 0.0, "flip": 8.0},
    ),
)

XR_SCANNERS: tuple[ScannerProfile, ...] = (
    ScannerProfile(
        manufacturer="SIEMENS",
        model_name="Ysio Max",
        institution="Phantom General Hospital",
        station_name="XRDR01",
        software_versions="VF85",
        weight=0.4,
        field_of_view_mm=420.0,
        slice_thickness_mm=0.0,
        noise=0.012,
        pixel_representation=0,
        bits_stored=12,
        gain=1400.0,
        offset=300.0,
        extra={"kvp": 125, "sid": 1800.0, "sod": 1650.0, "detector": "SCINTILLATOR"},
    ),
    ScannerProfile(
        manufacturer="GE MEDICAL SYSTEMS",
        model_name="Definium 8000",
        institution="Synthetic University Medical Center",
        station_name="GEDX8000",
        software_versions="DM_Platform_Release_Linux",
        weight=0.35,
        field_of_view_mm=400.0,
        slice_thickness_mm=0.0,
        noise=0.016,
        pixel_representation=0,
        bits_stored=14,
        gain=5200.0,
        offset=1500.0,
        extra={"kvp": 120, "sid": 1830.0, "sod": 1680.0, "detector": "SCINTILLATOR"},
    ),
    ScannerProfile(
        manufacturer="FUJIFILM Corporation",
        model_name="FCR CAPSULA XLII",
        institution="Phantom Regional Clinic",
        station_name="FCR01",
        software_versions="A08",
        weight=0.25,
        field_of_view_mm=430.0,
        slice_thickness_mm=0.0,
        noise=0.02,
        pixel_representation=0,
        bits_stored=12,
        gain=1250.0,
        offset=450.0,
        photometric="MONOCHROME1",
        extra={"kvp": 110, "sid": 1800.0, "sod": 1650.0, "detector": "STORAGE"},
    ),
)

SCANNERS: dict[str, tuple[ScannerProfile, ...]] = {
    "ct-lesion": CT_SCANNERS,
    "mri-tumor": MR_SCANNERS,
    "xr-nodule": XR_SCANNERS,
}
