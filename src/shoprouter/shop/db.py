"""The embedded shop database: SQLite, created and seeded deterministically on first use.

Everything is generated from one seed with `random.Random`, so two databases made with the same seed are
identical (the tests rely on it). The shop has its own calendar: `today` is a fixed date stored in the
database (`SHOP_TODAY`), so order ages, delivery dates and return windows do not drift with the wall clock.

Contents: 240 products in 24 categories (specs, stock, colours/sizes, warranty, reviews), 60 customers with
addresses and saved payment methods, 320 orders with items, shipments, payments (some failed, some charged
twice), invoices, returns, promo codes, gift cards and a troubleshooting knowledge base.

The file is built under a temporary name and linked into place atomically, so several processes that
start at once never see a half-seeded shop.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import threading
from datetime import date, timedelta
from pathlib import Path

from ..errors import ShopRouterError

SEED = 20250602
SHOP_TODAY = date(2025, 6, 2)
RETURN_WINDOW_DAYS = 30
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE products (
    id INTEGER PRIMARY KEY, sku TEXT UNIQUE NOT NULL, name TEXT UNIQUE NOT NULL, brand TEXT NOT NULL,
    model TEXT NOT NULL, category TEXT NOT NULL, price_cents INTEGER NOT NULL, stock INTEGER NOT NULL,
    colors TEXT NOT NULL, sizes TEXT NOT NULL, specs TEXT NOT NULL, warranty_months INTEGER NOT NULL,
    returnable INTEGER NOT NULL, description TEXT NOT NULL);
CREATE TABLE reviews (
    id INTEGER PRIMARY KEY, product_id INTEGER NOT NULL REFERENCES products(id), rating INTEGER NOT NULL,
    author TEXT NOT NULL, created_on TEXT NOT NULL, body TEXT NOT NULL, pros TEXT NOT NULL, cons TEXT NOT NULL);
CREATE TABLE customers (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE NOT NULL, phone TEXT NOT NULL,
    password_hash TEXT NOT NULL, two_factor INTEGER NOT NULL, newsletter INTEGER NOT NULL, created_on TEXT NOT NULL);
CREATE TABLE addresses (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), label TEXT NOT NULL,
    line1 TEXT NOT NULL, city TEXT NOT NULL, postcode TEXT NOT NULL, country TEXT NOT NULL,
    is_default INTEGER NOT NULL);
CREATE TABLE saved_methods (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), kind TEXT NOT NULL,
    last4 TEXT, expiry TEXT);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), status TEXT NOT NULL,
    placed_on TEXT NOT NULL, total_cents INTEGER NOT NULL, shipping_address TEXT NOT NULL);
CREATE TABLE order_items (
    order_id INTEGER NOT NULL REFERENCES orders(id), product_id INTEGER NOT NULL REFERENCES products(id),
    quantity INTEGER NOT NULL, price_cents INTEGER NOT NULL, size TEXT, color TEXT);
CREATE TABLE shipments (
    order_id INTEGER PRIMARY KEY REFERENCES orders(id), carrier TEXT NOT NULL, tracking_number TEXT NOT NULL,
    status TEXT NOT NULL, shipped_on TEXT NOT NULL, eta TEXT NOT NULL, delivered_on TEXT, last_location TEXT NOT NULL);
CREATE TABLE payments (
    id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id), method TEXT NOT NULL, last4 TEXT,
    amount_cents INTEGER NOT NULL, status TEXT NOT NULL, created_on TEXT NOT NULL, decline_reason TEXT);
CREATE TABLE invoices (
    number TEXT PRIMARY KEY, order_id INTEGER UNIQUE NOT NULL REFERENCES orders(id), issued_on TEXT NOT NULL,
    amount_cents INTEGER NOT NULL);
CREATE TABLE returns (
    id TEXT PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id), product_id INTEGER NOT NULL,
    reason TEXT NOT NULL, status TEXT NOT NULL, created_on TEXT NOT NULL, refund_cents INTEGER NOT NULL,
    refunded_on TEXT, note TEXT);
CREATE TABLE promos (
    code TEXT PRIMARY KEY, percent_off INTEGER NOT NULL, min_order_cents INTEGER NOT NULL, expires_on TEXT NOT NULL);
CREATE TABLE gift_cards (code TEXT PRIMARY KEY, balance_cents INTEGER NOT NULL, expires_on TEXT NOT NULL);
CREATE TABLE kb_articles (
    id INTEGER PRIMARY KEY, title TEXT NOT NULL, keywords TEXT NOT NULL, error_codes TEXT NOT NULL,
    steps TEXT NOT NULL);
CREATE TABLE password_resets (
    token TEXT PRIMARY KEY, customer_id INTEGER NOT NULL, created_on TEXT NOT NULL, used INTEGER NOT NULL);
CREATE TABLE profile_changes (
    id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, field TEXT NOT NULL, old_value TEXT,
    new_value TEXT, changed_on TEXT NOT NULL);
CREATE INDEX orders_by_customer ON orders(customer_id);
CREATE INDEX items_by_order ON order_items(order_id);
CREATE INDEX payments_by_order ON payments(order_id);
CREATE INDEX reviews_by_product ON reviews(product_id);
CREATE INDEX returns_by_order ON returns(order_id);
"""

# ----------------------------------------------------------------------------------------------- catalogue


def _r(rng: random.Random, lo: float, hi: float, step: float = 1) -> float:
    n = int(round((hi - lo) / step))
    return round(lo + step * rng.randint(0, n), 2)


def _audio(rng, over_ear=False):
    return {"battery_hours": int(_r(rng, 20, 60, 5) if over_ear else _r(rng, 5, 12)),
            "bluetooth": rng.choice(["5.0", "5.2", "5.3"]), "noise_cancelling": rng.random() < 0.6,
            "water_resistance": "none" if over_ear else rng.choice(["IPX4", "IPX5", "IP67"]),
            "weight_g": int(_r(rng, 220, 350, 10) if over_ear else _r(rng, 4, 7)),
            "compatible_with": ["iOS", "Android", "Windows", "macOS"]}


def _shoes(rng, boots=False):
    return {"upper_material": rng.choice(["leather", "suede", "synthetic"] if boots else ["mesh", "knit", "synthetic"]),
            "sole": rng.choice(["Vibram rubber", "rubber", "EVA foam"]), "weight_g": int(_r(rng, 220, 650, 10)),
            "waterproof": boots and rng.random() < 0.8 or (not boots and rng.random() < 0.15),
            "drop_mm": int(_r(rng, 4, 12, 2))}


def _laptop(rng):
    return {"cpu": rng.choice(["Intel Core i5", "Intel Core i7", "AMD Ryzen 5", "AMD Ryzen 7", "Apple M3"]),
            "ram_gb": rng.choice([8, 16, 32]), "storage_gb": rng.choice([256, 512, 1024]),
            "screen_in": rng.choice([13.3, 14.0, 15.6, 16.0]), "weight_kg": _r(rng, 1.1, 2.4, 0.1),
            "battery_hours": int(_r(rng, 6, 20)), "os": rng.choice(["Windows 11", "ChromeOS", "macOS"])}


def _phone(rng):
    return {"screen_in": _r(rng, 6.0, 6.9, 0.1), "storage_gb": rng.choice([128, 256, 512]),
            "camera_mp": rng.choice([12, 48, 50, 108]), "battery_mah": int(_r(rng, 3500, 5500, 100)),
            "5g": rng.random() < 0.8, "water_resistance": rng.choice(["IP54", "IP67", "IP68"])}


def _watch(rng):
    return {"battery_days": int(_r(rng, 1, 14)), "gps": rng.random() < 0.7,
            "water_resistance": rng.choice(["5 ATM", "10 ATM", "IP68"]), "heart_rate": True,
            "compatible_with": rng.choice([["iOS", "Android"], ["Android"], ["iOS"]])}


def _tablet(rng):
    return {"screen_in": rng.choice([8.7, 10.2, 11.0, 12.9]), "storage_gb": rng.choice([64, 128, 256]),
            "battery_hours": int(_r(rng, 8, 14)), "stylus_support": rng.random() < 0.5,
            "os": rng.choice(["Android", "iPadOS"])}


def _monitor(rng):
    return {"size_in": rng.choice([24, 27, 32, 34]), "resolution": rng.choice(["1920x1080", "2560x1440", "3840x2160"]),
            "refresh_hz": rng.choice([60, 75, 144, 165]), "panel": rng.choice(["IPS", "VA", "OLED"]),
            "ports": ["HDMI", "DisplayPort"] + (["USB-C"] if rng.random() < 0.5 else [])}


def _keyboard(rng):
    return {"layout": rng.choice(["full size", "tenkeyless", "75%", "60%"]),
            "switches": rng.choice(["mechanical red", "mechanical brown", "membrane", "low-profile"]),
            "wireless": rng.random() < 0.6, "backlight": rng.choice(["none", "white", "RGB"]),
            "compatible_with": ["Windows", "macOS", "Linux"]}


def _mouse(rng):
    return {"dpi": int(_r(rng, 1600, 26000, 400)), "wireless": rng.random() < 0.7, "buttons": rng.randint(3, 8),
            "weight_g": int(_r(rng, 55, 130, 5)), "compatible_with": ["Windows", "macOS", "Linux"]}


def _backpack(rng):
    return {"capacity_l": int(_r(rng, 15, 45, 5)), "material": rng.choice(["nylon", "polyester", "canvas", "leather"]),
            "laptop_sleeve_in": rng.choice([None, 14, 15.6, 17]), "waterproof": rng.random() < 0.5,
            "dimensions_cm": f"{rng.randint(40, 55)} x {rng.randint(26, 35)} x {rng.randint(12, 22)}"}


def _jacket(rng):
    return {"material": rng.choice(["Gore-Tex", "nylon", "polyester"]), "waterproof_mm": int(_r(rng, 5000, 28000, 1000)),
            "hood": True, "packable": rng.random() < 0.5, "fit": rng.choice(["regular", "slim", "relaxed"])}


def _tshirt(rng):
    return {"material": rng.choice(["cotton", "organic cotton", "cotton blend", "merino wool"]),
            "fit": rng.choice(["regular", "slim", "oversized"]), "weight_gsm": int(_r(rng, 140, 220, 10)),
            "care": "machine wash 30C"}


def _coffee(rng):
    return {"capacity_cups": rng.choice([1, 4, 10, 12]), "power_w": int(_r(rng, 800, 1600, 100)),
            "built_in_grinder": rng.random() < 0.3, "type": rng.choice(["drip", "espresso", "pod", "pour-over"]),
            "dimensions_cm": f"{rng.randint(18, 35)} x {rng.randint(15, 30)} x {rng.randint(28, 42)}"}


def _blender(rng):
    return {"power_w": int(_r(rng, 300, 1500, 100)), "jug_l": _r(rng, 0.5, 2.0, 0.25),
            "speeds": rng.randint(2, 10), "bpa_free": True, "dishwasher_safe": rng.random() < 0.7}


def _chair(rng):
    return {"material": rng.choice(["mesh", "leather", "fabric"]), "max_load_kg": int(_r(rng, 100, 160, 10)),
            "adjustable_armrests": rng.random() < 0.7, "lumbar_support": rng.random() < 0.8,
            "seat_height_cm": f"{rng.randint(40, 46)}-{rng.randint(50, 56)}"}


def _desk(rng):
    return {"top_cm": f"{rng.choice([120, 140, 160, 180])} x {rng.choice([60, 70, 80])}",
            "height_range_cm": f"{rng.randint(60, 72)}-{rng.randint(118, 128)}", "motors": rng.choice([1, 2]),
            "max_load_kg": int(_r(rng, 70, 160, 10)), "material": rng.choice(["bamboo", "oak veneer", "laminate"])}


def _speaker(rng):
    return {"battery_hours": int(_r(rng, 8, 24)), "water_resistance": rng.choice(["IPX4", "IPX7", "IP67"]),
            "power_w": int(_r(rng, 10, 60, 5)), "stereo_pairing": rng.random() < 0.7,
            "compatible_with": ["iOS", "Android", "Windows", "macOS"]}


def _camera(rng):
    return {"sensor": rng.choice(["APS-C", "full frame", "micro four thirds", "1-inch"]),
            "megapixels": rng.choice([20, 24, 26, 33, 45]), "video": rng.choice(["4K30", "4K60", "6K30"]),
            "weight_g": int(_r(rng, 350, 900, 10)), "weather_sealed": rng.random() < 0.5}


def _tent(rng):
    return {"capacity_people": rng.choice([1, 2, 3, 4, 6]), "weight_kg": _r(rng, 1.0, 6.0, 0.1),
            "season": rng.choice(["3-season", "4-season"]), "waterproof_mm": int(_r(rng, 1500, 5000, 500)),
            "material": rng.choice(["ripstop nylon", "polyester"])}


def _mat(rng):
    return {"thickness_mm": rng.choice([3, 4, 5, 6, 8]), "material": rng.choice(["TPE", "natural rubber", "PVC", "cork"]),
            "dimensions_cm": f"{rng.choice([173, 183, 185])} x {rng.choice([61, 66, 68])}", "non_slip": True}


def _bottle(rng):
    return {"capacity_ml": rng.choice([500, 750, 1000]), "material": rng.choice(["stainless steel", "Tritan", "glass"]),
            "insulated": rng.random() < 0.6, "dishwasher_safe": rng.random() < 0.6, "bpa_free": True}


def _vacuum(rng):
    return {"type": rng.choice(["cordless stick", "robot", "canister"]), "battery_minutes": int(_r(rng, 30, 120, 5)),
            "bin_l": _r(rng, 0.3, 2.0, 0.1), "hepa_filter": rng.random() < 0.6, "weight_kg": _r(rng, 1.5, 6.0, 0.1)}


CATEGORIES = [
    # key, display noun, words that name the category, brands, price range ($), specs, colours, sizes,
    # review aspects (praise, complaint), warranty months
    ("earbuds", "Wireless Earbuds", ["earbuds", "earphones", "in-ear headphones", "buds"], ["Sonara", "Auris", "Beatline"],
     (29, 249), lambda r: _audio(r), ["black", "white", "blue"], [],
     (["great battery life", "clear sound", "comfortable fit"], ["connection drops", "case feels cheap"]), 12),
    ("headphones", "Over-Ear Headphones", ["headphones", "over-ear headphones", "headset"], ["Sonara", "Auris", "Beatline"],
     (49, 399), lambda r: _audio(r, True), ["black", "silver", "navy"], [],
     (["excellent noise cancelling", "rich bass", "comfortable for hours"], ["ear pads get warm", "heavy"]), 24),
    ("running shoes", "Running Shoes", ["running shoes", "runners", "trainers", "sneakers"], ["Stride", "Veloce", "Kinetic"],
     (59, 199), lambda r: _shoes(r), ["black", "white", "red", "blue", "grey"], ["7", "8", "9", "10", "11", "12"],
     (["very cushioned", "true to size", "light and breathable"], ["runs small", "sole wears quickly"]), 6),
    ("hiking boots", "Hiking Boots", ["hiking boots", "boots", "walking boots"], ["Trailhead", "Kinetic", "Northpeak"],
     (89, 279), lambda r: _shoes(r, True), ["brown", "black", "green"], ["7", "8", "9", "10", "11", "12"],
     (["really waterproof", "great ankle support", "grippy sole"], ["stiff at first", "runs large"]), 12),
    ("laptops", "Laptop", ["laptop", "notebook", "ultrabook"], ["Corvex", "Lumina", "Tessell"],
     (449, 2199), _laptop, ["silver", "space grey", "black"], [],
     (["fast and quiet", "great screen", "long battery life"], ["gets hot", "speakers are weak"]), 24),
    ("smartphones", "Smartphone", ["smartphone", "phone", "mobile"], ["Corvex", "Lumina", "Pixelon"],
     (199, 1199), _phone, ["black", "white", "green", "blue"], [],
     (["excellent camera", "battery lasts two days", "smooth screen"], ["slippery", "no charger in the box"]), 24),
    ("smartwatches", "Smartwatch", ["smartwatch", "watch", "fitness tracker"], ["Pulseon", "Lumina", "Tempra"],
     (79, 499), _watch, ["black", "silver", "rose gold"], [],
     (["accurate heart rate", "great battery", "nice display"], ["strap is uncomfortable", "gps is slow"]), 12),
    ("tablets", "Tablet", ["tablet", "ipad"], ["Corvex", "Lumina", "Tessell"],
     (149, 999), _tablet, ["silver", "space grey"], [],
     (["sharp display", "good for reading", "snappy"], ["gets fingerprints", "slow charging"]), 24),
    ("monitors", "Monitor", ["monitor", "display", "screen"], ["Viewpro", "Tessell", "Lumina"],
     (129, 899), _monitor, ["black"], [],
     (["vivid colours", "no dead pixels", "smooth at high refresh"], ["stand wobbles", "backlight bleed"]), 36),
    ("keyboards", "Keyboard", ["keyboard"], ["Keyforge", "Tessell", "Clickr"],
     (29, 219), _keyboard, ["black", "white"], [],
     (["satisfying keys", "solid build", "great backlight"], ["loud", "software is clunky"]), 24),
    ("mice", "Mouse", ["mouse", "mice"], ["Keyforge", "Clickr", "Tessell"],
     (19, 149), _mouse, ["black", "white"], [],
     (["precise sensor", "comfortable grip", "long battery"], ["scroll wheel squeaks", "too light"]), 24),
    ("backpacks", "Backpack", ["backpack", "rucksack", "bag"], ["Trailhead", "Urbanpack", "Northpeak"],
     (39, 199), _backpack, ["black", "grey", "olive", "navy"], [],
     (["lots of pockets", "comfortable straps", "tough fabric"], ["zip feels flimsy", "smaller than expected"]), 24),
    ("rain jackets", "Rain Jacket", ["rain jacket", "raincoat", "jacket", "waterproof jacket"], ["Northpeak", "Trailhead", "Drizzle"],
     (59, 349), _jacket, ["black", "yellow", "navy", "red"], ["XS", "S", "M", "L", "XL", "XXL"],
     (["kept me dry", "packs small", "breathable"], ["runs small", "hood is too big"]), 24),
    ("t-shirts", "T-Shirt", ["t-shirt", "tshirt", "tee", "shirt"], ["Cottonfield", "Urbanpack", "Basico"],
     (12, 49), _tshirt, ["white", "black", "grey", "navy", "green"], ["XS", "S", "M", "L", "XL", "XXL"],
     (["soft fabric", "holds its shape", "true to size"], ["shrinks in the wash", "thin"]), 3),
    ("coffee makers", "Coffee Maker", ["coffee maker", "coffee machine", "espresso machine"], ["Brewmaster", "Kaffa", "Homely"],
     (39, 699), _coffee, ["black", "silver", "red"], [],
     (["great tasting coffee", "easy to clean", "heats up fast"], ["leaks a little", "noisy"]), 24),
    ("blenders", "Blender", ["blender", "smoothie maker"], ["Kaffa", "Homely", "Vortexa"],
     (29, 399), _blender, ["black", "white", "red"], [],
     (["crushes ice easily", "powerful motor", "easy to clean"], ["very loud", "lid is hard to fit"]), 24),
    ("office chairs", "Office Chair", ["office chair", "desk chair", "chair"], ["Ergoseat", "Homely", "Postura"],
     (99, 799), _chair, ["black", "grey"], [],
     (["great lumbar support", "comfortable all day", "easy assembly"], ["armrests wobble", "squeaks"]), 60),
    ("standing desks", "Standing Desk", ["standing desk", "desk", "sit-stand desk"], ["Ergoseat", "Postura", "Liftwell"],
     (199, 899), _desk, ["white", "black", "oak"], [],
     (["smooth motor", "very stable", "quiet"], ["wobbles at full height", "assembly took ages"]), 60),
    ("speakers", "Bluetooth Speaker", ["bluetooth speaker", "speaker", "portable speaker"], ["Sonara", "Beatline", "Auris"],
     (25, 299), _speaker, ["black", "blue", "red"], [],
     (["loud and clear", "great battery", "survives the pool"], ["weak bass", "app is buggy"]), 12),
    ("cameras", "Mirrorless Camera", ["camera", "mirrorless camera"], ["Optix", "Lumina", "Focale"],
     (499, 2499), _camera, ["black", "silver"], [],
     (["sharp photos", "fast autofocus", "great in low light"], ["battery drains fast", "menus are confusing"]), 24),
    ("tents", "Tent", ["tent"], ["Northpeak", "Trailhead", "Campfire"],
     (79, 599), _tent, ["green", "orange", "grey"], [],
     (["easy to pitch", "stayed dry in a storm", "roomy"], ["heavy", "zips snag"]), 24),
    ("yoga mats", "Yoga Mat", ["yoga mat", "exercise mat", "mat"], ["Zenflow", "Postura", "Basico"],
     (19, 129), _mat, ["purple", "blue", "black", "green"], [],
     (["great grip", "good cushioning", "no smell"], ["marks easily", "slippery when sweaty"]), 12),
    ("water bottles", "Water Bottle", ["water bottle", "bottle", "flask"], ["Hydra", "Campfire", "Basico"],
     (12, 49), _bottle, ["black", "white", "blue", "pink", "green"], [],
     (["keeps drinks cold all day", "no leaks", "sturdy"], ["paint chips", "hard to clean"]), 12),
    ("vacuum cleaners", "Vacuum Cleaner", ["vacuum cleaner", "vacuum", "hoover"], ["Vortexa", "Homely", "Cleanix"],
     (99, 799), _vacuum, ["grey", "purple", "white"], [],
     (["strong suction", "light", "great on pet hair"], ["battery dies quickly", "small bin"]), 24),
]

MODELS = ["Aero", "Nova", "Pulse", "Vertex", "Zen", "Flux", "Orbit", "Terra", "Halo", "Echo", "Volt", "Summit",
          "Strata", "Drift", "Ember", "Glide", "Apex", "Luma", "Nimbus", "Quill", "Ridge", "Sable", "Tempo", "Vista",
          "Wave", "Zephyr", "Atlas", "Bolt", "Crest", "Dune"]
SUFFIXES = ["", " 2", " Pro", " Lite", " Max", " X", " Air", " Plus", " 3", " Mini"]
PER_CATEGORY = 10

FIRST = ["Alice", "Ben", "Chloe", "Daniel", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Keiko", "Liam", "Maya",
         "Noah", "Olivia", "Pablo", "Quinn", "Rosa", "Samir", "Tara", "Umar", "Vera", "Wen", "Ximena", "Yusuf", "Zoe"]
LAST = ["Anderson", "Brooks", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen", "Kowalski",
        "Larsen", "Moreau", "Novak", "Okafor", "Patel", "Rossi", "Schmidt", "Tanaka", "Weber"]
STREETS = ["Oak", "Maple", "Cedar", "Elm", "Pine", "Birch", "Willow", "Harbor", "Mill", "Station", "Church", "Park"]
STREET_KINDS = ["Street", "Road", "Avenue", "Lane", "Drive", "Way"]
CITIES = [("Springfield", "US"), ("Riverton", "US"), ("Lakeside", "US"), ("Fairview", "US"), ("Bristol", "GB"),
          ("Leeds", "GB"), ("Dublin", "IE"), ("Toronto", "CA")]
CARRIERS = {"UPS": "1Z", "DHL": "JD", "FedEx": "FX", "USPS": "94"}
CARD_KINDS = ["Visa", "Mastercard", "American Express"]
WALLETS = ["PayPal", "Apple Pay", "Google Pay"]
DECLINES = ["insufficient funds", "card expired", "3-D Secure authentication failed", "incorrect CVC",
            "declined by the issuing bank (suspected fraud)"]
ACCEPTED_METHODS = ["Visa", "Mastercard", "American Express", "PayPal", "Apple Pay", "Google Pay", "gift cards"]

KB = [
    ("App crashes on launch", "app crash crashes crashing launch open opening closes startup", "",
     ["Update the app to the latest version from the App Store or Google Play.",
      "Restart your phone.", "Clear the app cache (Android: Settings > Apps > Shop > Storage > Clear cache).",
      "Reinstall the app; your cart and orders are kept in your account."]),
    ("App freezes or is very slow", "app freeze freezes frozen slow laggy stuck hangs", "",
     ["Close other apps running in the background.", "Check that you have at least 500 MB of free storage.",
      "Update the app and your phone's operating system.", "Switch between Wi-Fi and mobile data."]),
    ("Checkout button does nothing", "checkout button click nothing happens place order greyed disabled pay", "",
     ["Make sure every required field (address, delivery option, payment) is filled in; the button stays disabled until then.",
      "Turn off ad blockers or script blockers for our site.", "Refresh the page; your cart is saved.",
      "Try another browser or the app."]),
    ("Page not loading or blank page", "page blank white loading load spinner website site not loading", "",
     ["Refresh the page (Ctrl+F5 on Windows, Cmd+Shift+R on a Mac).", "Clear your browser cache and cookies.",
      "Disable browser extensions and try again.", "Check status.example-shop.com for outages."]),
    ("Server error 500 or 503", "server error 500 503 internal unavailable", "500 503",
     ["This is an error on our side; wait a minute and try again.", "If it keeps happening, note the time and the page.",
      "Check status.example-shop.com; we post incidents there."]),
    ("Error 404: page not found", "404 not found link broken", "404",
     ["The link may be outdated: search for the product instead.", "Clear your browser cache and reload."]),
    ("Login error: invalid credentials", "login log sign error invalid credentials password incorrect can't log", "E-1042",
     ["Check that Caps Lock is off and that you use the e-mail address of your account.",
      "Use 'Forgot password' to set a new password.", "After 5 failed attempts the login is locked for 15 minutes."]),
    ("Login loop: sent back to the login page", "login loop redirect keeps asking signed out logged out cookies", "E-1043",
     ["Allow cookies for our site (third-party cookie blockers can cause this).",
      "Clear cookies for our site and log in again.", "Check that your device's date and time are set automatically."]),
    ("Two-factor code not arriving", "2fa two-factor code sms text verification not arriving received", "E-2001",
     ["Wait 60 seconds and press 'Resend code'.", "Check that the phone number in your account is correct.",
      "Use one of your backup codes.", "SMS can be delayed by the carrier; try the authenticator app option."]),
    ("Payment page keeps spinning", "payment page spinning loading stuck processing card form", "E-3005",
     ["Do not pay twice: wait 5 minutes and check your orders first.", "Turn off VPNs and ad blockers.",
      "Try another browser or the app."]),
    ("Images not showing", "images pictures photos not showing broken missing load", "",
     ["Refresh the page.", "Check whether an extension blocks images.", "Clear your browser cache."]),
    ("Cart is empty after logging in", "cart empty basket items disappeared lost vanished", "",
     ["Items added as a guest are merged when you log in on the same browser.",
      "Check that you are logged in to the right account.", "Items that sold out are removed from the cart."]),
    ("Notifications not arriving", "notifications push alerts not arriving emails", "",
     ["Allow notifications for the app in your phone's settings.", "Check your notification preferences in Account > Settings.",
      "Check your spam folder for e-mails."]),
    ("App won't install or update", "install update store download fails won't", "",
     ["Check you have enough free storage.", "Restart the App Store / Google Play.",
      "The app needs iOS 15 or Android 9 or newer."]),
    ("Search returns no results", "search results nothing found no results filter", "",
     ["Check the spelling or try a shorter search.", "Clear any filters (price, size, brand) you set earlier."]),
    ("Promo code field gives an error", "promo code coupon field error invalid apply", "E-4010",
     ["Codes are case-insensitive but must not contain spaces.",
      "Check the minimum order value and expiry date of the code.", "One promo code per order."]),
    ("Website is very slow", "slow website site sluggish takes forever performance", "",
     ["Check your connection speed.", "Close other tabs.", "Try the app; it caches pages."]),
    ("Error E-1050: session expired", "session expired timeout logged out", "E-1050",
     ["For security, sessions end after 30 minutes without activity: log in again.",
      "Your cart is kept for 7 days."]),
]


def fmt_value(value) -> str:
    """A spec value for people: yes/no for booleans, lists joined by commas."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "none"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _hash_password(password: str, salt: str) -> str:
    return hashlib.sha256((salt + password).encode()).hexdigest()


def _seed(conn: sqlite3.Connection, seed: int) -> None:
    rng = random.Random(seed)
    today = SHOP_TODAY
    for stmt in filter(str.strip, SCHEMA.split(";")):
        conn.execute(stmt)
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("schema_version", str(SCHEMA_VERSION)), ("seed", str(seed)), ("today", today.isoformat()),
        ("return_window_days", str(RETURN_WINDOW_DAYS))])

    # products and reviews
    pid = 0
    review_id = 0
    products = []
    for cat, noun, _words, brands, (lo, hi), specs_fn, colors, sizes, (good, bad), warranty in CATEGORIES:
        models = rng.sample(MODELS, PER_CATEGORY)
        for i in range(PER_CATEGORY):
            pid += 1
            brand = brands[i % len(brands)]
            model = models[i] + SUFFIXES[rng.randrange(len(SUFFIXES))]
            name = f"{brand} {model} {noun}"
            price = int(round(rng.uniform(lo, hi))) * 100 - 1
            stock = 0 if rng.random() < 0.12 else rng.randint(1, 80)
            pcolors = sorted(rng.sample(colors, min(len(colors), rng.randint(1, 3))))
            specs = specs_fn(rng)
            returnable = 0 if rng.random() < 0.05 else 1
            highlights = ", ".join(f"{k.replace('_', ' ')}: {fmt_value(v)}" for k, v in list(specs.items())[:3])
            desc = f"The {name}: {highlights}."
            conn.execute("INSERT INTO products VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                pid, f"SKU-{pid:05d}", name, brand, model, cat, price, stock, json.dumps(pcolors), json.dumps(sizes),
                json.dumps(specs), warranty, returnable, desc))
            products.append((pid, price, sizes, pcolors))
            quality = rng.uniform(2.6, 4.9)
            for _ in range(rng.randint(2, 9)):
                review_id += 1
                rating = max(1, min(5, int(round(rng.gauss(quality, 0.9)))))
                pros = rng.sample(good, rng.randint(1, 2)) if rating >= 3 else []
                cons = rng.sample(bad, rng.randint(1, 2)) if rating <= 3 else []
                body = "; ".join([p.capitalize() for p in pros] + [c.capitalize() for c in cons]) + "."
                conn.execute("INSERT INTO reviews VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (
                    review_id, pid, rating, f"{rng.choice(FIRST)} {rng.choice(LAST)[0]}.",
                    (today - timedelta(days=rng.randint(1, 400))).isoformat(), body, json.dumps(pros), json.dumps(cons)))

    # customers, addresses, saved payment methods
    customers = []
    for cid in range(1, 61):
        first, last = FIRST[(cid - 1) % len(FIRST)], LAST[(cid * 7) % len(LAST)]
        email = f"{first.lower()}.{last.lower()}{cid}@example.com"
        conn.execute("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (
            cid, f"{first} {last}", email, f"+1-555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
            _hash_password(f"secret-{cid}", str(cid)), int(rng.random() < 0.4), int(rng.random() < 0.5),
            (today - timedelta(days=rng.randint(30, 1500))).isoformat()))
        addrs = []
        for j in range(rng.randint(1, 2)):
            city, country = rng.choice(CITIES)
            line1 = f"{rng.randint(1, 250)} {rng.choice(STREETS)} {rng.choice(STREET_KINDS)}"
            postcode = f"{rng.randint(10000, 99999)}" if country == "US" else f"{rng.choice('ABCDEFGH')}{rng.randint(1, 20)} {rng.randint(1, 9)}XY"
            conn.execute("INSERT INTO addresses (customer_id, label, line1, city, postcode, country, is_default) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", (cid, ["home", "work"][j], line1, city, postcode, country, int(j == 0)))
            addrs.append(f"{line1}, {city} {postcode}, {country}")
        methods = []
        for _ in range(rng.randint(1, 2)):
            kind = rng.choice(CARD_KINDS + WALLETS)
            last4 = f"{rng.randint(0, 9999):04d}" if kind in CARD_KINDS else None
            expiry = f"{rng.randint(1, 12):02d}/{rng.randint(25, 30)}" if last4 else None
            conn.execute("INSERT INTO saved_methods (customer_id, kind, last4, expiry) VALUES (?, ?, ?, ?)",
                         (cid, kind, last4, expiry))
            methods.append((kind, last4))
        customers.append((cid, addrs, methods))

    # orders, items, shipments, payments, invoices
    payment_id = 0
    delivered_orders = []
    for oid in range(10001, 10321):
        cid, addrs, methods = customers[rng.randrange(len(customers))]
        age = rng.choice([0, 0, 1, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 18, 20, 25, 30, 40, 55, 70, 90])
        placed = today - timedelta(days=age)
        items = []
        for p, price, sizes, colors in rng.sample(products, rng.randint(1, 3)):
            qty = 1 if rng.random() < 0.85 else 2
            items.append((p, qty, price, rng.choice(sizes) if sizes else None, rng.choice(colors)))
        total = sum(q * pr for _, q, pr, _, _ in items)
        special = rng.random()
        if special < 0.04:
            status = "cancelled"
        elif special < 0.12 and age <= 3:
            status = "payment_failed"
        elif age <= 1:
            status = rng.choice(["placed", "processing"])
        elif age <= 3:
            status = rng.choice(["processing", "shipped"])
        elif age <= 8:
            status = rng.choice(["shipped", "delivered"])
        else:
            status = "delivered"
        conn.execute("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", (oid, cid, status, placed.isoformat(), total, addrs[0]))
        for p, qty, price, size, color in items:
            conn.execute("INSERT INTO order_items VALUES (?, ?, ?, ?, ?, ?)", (oid, p, qty, price, size, color))
        if status in ("shipped", "delivered"):
            carrier = rng.choice(list(CARRIERS))
            shipped = placed + timedelta(days=rng.randint(0, 1))
            eta = shipped + timedelta(days=rng.randint(2, 5))
            if status == "delivered":
                delivered = min(today, eta + timedelta(days=rng.choice([-1, 0, 0, 1])))
                ship_status, where, eta = "delivered", addrs[0].split(", ")[1], delivered
            else:
                delivered = None
                ship_status = "out_for_delivery" if eta <= today else "in_transit"
                where = rng.choice(CITIES)[0] + " distribution centre"
                if eta < today:
                    eta = today
            conn.execute("INSERT INTO shipments VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (
                oid, carrier, CARRIERS[carrier] + "".join(str(rng.randint(0, 9)) for _ in range(12)), ship_status,
                shipped.isoformat(), eta.isoformat(), delivered.isoformat() if delivered else None, where))
            if status == "delivered":
                delivered_orders.append((oid, delivered, items))
        kind, last4 = rng.choice(methods)

        def pay(status_, reason=None, kind=kind, last4=last4, oid=oid, total=total, placed=placed):
            nonlocal payment_id
            payment_id += 1
            conn.execute("INSERT INTO payments VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (
                payment_id, oid, kind, last4, total, status_, placed.isoformat(), reason))

        if status == "payment_failed":
            pay("failed", rng.choice(DECLINES))
            continue
        if rng.random() < 0.08:
            pay("failed", rng.choice(DECLINES))
        pay("refunded" if status == "cancelled" else "captured")
        if status != "cancelled" and rng.random() < 0.06:
            pay("captured")  # the duplicate charge
        conn.execute("INSERT INTO invoices VALUES (?, ?, ?, ?)", (f"INV-{oid}", oid, placed.isoformat(), total))

    # returns on some delivered orders
    rma = 20000
    for oid, delivered, items in delivered_orders:
        if rng.random() >= 0.15:
            continue
        rma += 1
        p, qty, price, _, _ = items[0]
        created = delivered + timedelta(days=rng.randint(1, 10))
        if created > today:
            created = today
        st = rng.choice(["requested", "in_transit", "received", "refunded", "refunded", "rejected"])
        refunded = (created + timedelta(days=rng.randint(3, 8))) if st == "refunded" else None
        if refunded and refunded > today:
            refunded = today
        note = "the item was returned used and not in its original packaging" if st == "rejected" else None
        conn.execute("INSERT INTO returns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (
            f"R-{rma}", oid, p, rng.choice(["doesn't fit", "damaged", "wrong item", "changed my mind"]), st,
            created.isoformat(), qty * price, refunded.isoformat() if refunded else None, note))

    conn.executemany("INSERT INTO promos VALUES (?, ?, ?, ?)", [
        ("WELCOME10", 10, 0, "2025-12-31"), ("SUMMER20", 20, 5000, "2025-08-31"), ("SPRING15", 15, 0, "2025-05-31"),
        ("VIP25", 25, 20000, "2025-12-31"), ("FREESHIP", 0, 2500, "2025-09-30")])
    for _ in range(20):
        code = "GC-" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(4)) + "-" + \
               "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(4))
        conn.execute("INSERT INTO gift_cards VALUES (?, ?, ?)", (
            code, rng.choice([0, 1000, 2500, 5000, 10000]), (today + timedelta(days=rng.randint(-60, 700))).isoformat()))
    for i, (title, kw, codes, steps) in enumerate(KB, 1):
        conn.execute("INSERT INTO kb_articles VALUES (?, ?, ?, ?, ?)", (i, title, kw, codes, json.dumps(steps)))


def default_shop_path() -> Path:
    home = os.environ.get("SHOPROUTER_HOME")
    if home:
        return Path(home) / "shop.sqlite3"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "shoprouter" / "shop.sqlite3"


def create_shop_db(path: str | Path, seed: int = SEED) -> Path:
    """Create and seed the shop database at `path` unless it exists (safe when processes race)."""
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(str(tmp), isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("BEGIN")
            _seed(conn, seed)
            conn.execute("COMMIT")
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
        os.link(tmp, path)  # atomic, and fails when another process got there first
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
        for extra in ("-wal", "-shm"):
            Path(str(tmp) + extra).unlink(missing_ok=True)
    return path


class ShopDB:
    """The shop database: thread-safe (a connection per thread), created on first use."""

    def __init__(self, path: str | Path | None = None, seed: int = SEED):
        self.path = Path(path) if path is not None else default_shop_path()
        create_shop_db(self.path, seed)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        meta = dict(self.query("SELECT key, value FROM meta"))
        if int(meta.get("schema_version", 0)) != SCHEMA_VERSION:
            raise ShopRouterError(f"shop database {self.path} has schema {meta.get('schema_version')}, "
                                  f"expected {SCHEMA_VERSION}; delete it to rebuild")
        self.today = date.fromisoformat(meta["today"])
        self.return_window_days = int(meta["return_window_days"])

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self.conn().execute(sql, args).fetchall()

    def one(self, sql: str, args: tuple = ()) -> sqlite3.Row | None:
        return self.conn().execute(sql, args).fetchone()

    def write(self, statements: list[tuple[str, tuple]]) -> None:
        """Run statements in one IMMEDIATE transaction."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in statements:
                conn.execute(sql, args)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def fingerprint(self) -> str:
        """A hash of the seeded catalogue, customers and orders (equal for equal seeds)."""
        h = hashlib.sha256()
        for table in ("products", "reviews", "customers", "orders", "order_items", "payments", "returns"):
            for row in self.query(f"SELECT * FROM {table} ORDER BY 1"):
                h.update(repr(tuple(row)).encode())
        return h.hexdigest()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
