//! The per-host iPXE script and the kernel command line, rendered from the host's image.
//!
//! Templates are minijinja with strict undefined (a misspelt variable is an error, not an empty string) and the
//! trailing newline kept. The command line is the image's template; the script around it is fixed here.

use minijinja::{Environment, UndefinedBehavior, Value, context, syntax::SyntaxConfig};

use super::directory::{Artifact, ArtifactSource, Host, Image};

/// Each download is tried [`DOWNLOAD_TRIES`] times, [`RETRY_PAUSE_S`] seconds apart: iPXE does not retry a
/// failed download, and a boot plane restarting (an upgrade) or a blip of the network would otherwise end the
/// boot. Unrolled (`… && goto ok || sleep N`) because iPXE has no loop counter; the last try fails the script
/// as a single try did before.
const SCRIPT: &str = "#!ipxe
echo Beowulf: {{ hostname }} ({{ mac }}) boots image {{ image }}
{% for _ in retries %}kernel {{ kernel }} && goto beowulf_kernel || sleep {{ pause }}
{% endfor %}kernel {{ kernel }}
:beowulf_kernel
{% for i in initrds %}{% set n = loop.index %}{% for _ in retries %}initrd {{ i.url }} && goto beowulf_initrd{{ n }} || sleep {{ pause }}
{% endfor %}initrd {{ i.url }}
:beowulf_initrd{{ n }}
{% endfor %}boot
";

/// How many times the script tries each download.
pub const DOWNLOAD_TRIES: usize = 4;
/// Seconds between two tries.
pub const RETRY_PAUSE_S: u64 = 3;

/// What a rendering needs besides the host and image.
#[derive(Debug, Clone)]
pub struct BootContext<'a> {
    /// `http://<boot server>:<port>`, no trailing slash.
    pub server: &'a str,
    pub namespace: &'a str,
    /// The boot's token. Only ever placed into the rendered text, never logged.
    pub token: &'a str,
}

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Building the default syntax with one flag changed cannot fail; fall back to the default if it ever did.
    if let Ok(syntax) = SyntaxConfig::builder().keep_trailing_newline(true).build() {
        env.set_syntax(syntax);
    }
    env
}

/// The URL a host fetches `artifact` of `image` from.
pub fn artifact_url(server: &str, image: &Image, artifact: &Artifact) -> String {
    match &artifact.source {
        ArtifactSource::File(_) => format!("{server}/images/{}/{}", image.name, artifact.name),
        ArtifactSource::Url(u) => u.clone(),
    }
}

/// The NoCloud seed URL (`ds=nocloud;s=<this>`): cloud-init appends `meta-data`, `user-data`, ...
pub fn nocloud_url(server: &str, token: &str) -> String {
    format!("{server}/nocloud/{token}/")
}

pub fn callback_url(server: &str, token: &str) -> String {
    format!("{server}/callback/{token}")
}

/// Where the inspector posts its hardware report.
pub fn inspection_url(server: &str, token: &str) -> String {
    format!("{server}/inspection/{token}")
}

/// Where the node posts its local-disk report.
pub fn disks_url(server: &str, token: &str) -> String {
    format!("{server}/disks/{token}")
}

pub fn ignition_url(server: &str, token: &str) -> String {
    format!("{server}/ignition/{token}")
}

/// The variables of a command line template (README, "Standalone inventory" lists them).
fn cmdline_vars(
    host_name: &str,
    mac: &crate::boot::MacAddr,
    ip: &str,
    image: &Image,
    b: &BootContext,
) -> Value {
    let rootfs_url = image
        .rootfs
        .as_ref()
        .map(|r| artifact_url(b.server, image, r));
    let vars = context! {
        hostname => host_name,
        mac => mac.to_string(),
        bootif => mac.bootif(),
        ip => ip,
        token => b.token,
        server => b.server,
        namespace => b.namespace,
        image => image.name.clone(),
        kernel => image.kernel.name.clone(),
        initrds => image.initrds.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
        nocloud_url => nocloud_url(b.server, b.token),
        callback_url => callback_url(b.server, b.token),
        ignition_url => ignition_url(b.server, b.token),
        inspection_url => inspection_url(b.server, b.token),
    };
    match rootfs_url {
        // Only defined when the image has a rootfs, so a template using it on an image without one fails.
        Some(u) => context! { rootfs_url => u, ..vars },
        None => vars,
    }
}

/// Renders the image's command line for one boot. Whitespace (including newlines, which would end the iPXE
/// `kernel` line and start a new command) collapses to single spaces.
pub fn render_cmdline(
    host_name: &str,
    mac: &crate::boot::MacAddr,
    ip: &str,
    image: &Image,
    b: &BootContext,
) -> Result<String, minijinja::Error> {
    let env = env();
    let out = env.render_str(&image.cmdline, cmdline_vars(host_name, mac, ip, image, b))?;
    Ok(out.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Renders `image`'s command line with sample values: the inventory check for templates.
pub fn check_cmdline(image: &Image) -> Result<String, minijinja::Error> {
    let mac = crate::boot::MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    let b = BootContext {
        server: "http://192.0.2.1:8080",
        namespace: "standalone",
        token: "0000000000000000000000000000000000000000000000000000000000000000",
    };
    render_cmdline("sample", &mac, "192.0.2.10", image, &b)
}

/// The `kernel` command's arguments: the URL, the initrd names (for EFI), the command line.
fn kernel_args(url: &str, image: &Image, cmdline: &str) -> String {
    let mut k = url.to_string();
    for i in &image.initrds {
        k.push_str(" initrd=");
        k.push_str(&i.name);
    }
    if !cmdline.is_empty() {
        k.push(' ');
        k.push_str(cmdline);
    }
    k
}

/// The iPXE script for one boot of `host` with `image`.
pub fn render_script(
    host: &Host,
    image: &Image,
    b: &BootContext,
) -> Result<String, minijinja::Error> {
    let mut cmdline = render_cmdline(&host.name, &host.mac, &host.ip.to_string(), image, b)?;
    // The disk plan goes after the image's own arguments: every image of the host's gets it, whatever its
    // template says (the inspection image does not: it only reads).
    let disks = crate::storage::kernel_args(
        &host.local_disks,
        host.cleaning,
        &disks_url(b.server, b.token),
    );
    if !disks.is_empty() && image.name == host.image {
        if !cmdline.is_empty() {
            cmdline.push(' ');
        }
        cmdline.push_str(&disks);
    }
    let initrds: Vec<Value> = image
        .initrds
        .iter()
        .map(|i| context! { name => i.name.clone(), url => artifact_url(b.server, image, i) })
        .collect();
    env().render_str(
        SCRIPT,
        context! {
            hostname => host.name.clone(),
            mac => host.mac.to_string(),
            image => image.name.clone(),
            kernel => kernel_args(&artifact_url(b.server, image, &image.kernel), image, &cmdline),
            initrds => initrds,
            retries => vec![(); DOWNLOAD_TRIES - 1],
            pause => RETRY_PAUSE_S,
        },
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::boot::directory::{ImageFormat, Secret};

    fn image(cmdline: &str, rootfs: bool) -> Image {
        let file = |n: &str| Artifact {
            name: n.to_string(),
            source: ArtifactSource::File(PathBuf::from(format!("/srv/{n}"))),
            sha256: None,
        };
        Image {
            name: "testnode".into(),
            format: ImageFormat::Live,
            kernel: file("vmlinuz"),
            initrds: vec![
                file("initrd.gz"),
                Artifact {
                    name: "extra.cpio".into(),
                    source: ArtifactSource::Url("http://mirror.example/extra.cpio".into()),
                    sha256: None,
                },
            ],
            rootfs: rootfs.then(|| file("image.squashfs")),
            cmdline: cmdline.into(),
        }
    }

    fn host() -> Host {
        Host {
            name: "node-0".into(),
            namespace: "standalone".into(),
            mac: "52:54:00:12:34:56".parse().unwrap(),
            ip: "10.99.0.157".parse().unwrap(),
            network: 0,
            image: "testnode".into(),
            user_data: Secret::new("#cloud-config\n"),
            vendor_data: None,
            network_config: None,
            ignition: None,
            local_disks: Vec::new(),
            cleaning: None,
        }
    }

    const B: BootContext = BootContext {
        server: "http://10.99.0.1:8080",
        namespace: "standalone",
        token: "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface",
    };

    #[test]
    fn script_is_rendered_exactly() {
        let img = image(
            "console=ttyS0,115200 BOOTIF={{ bootif }}\n  root=live:{{ rootfs_url }} rd.live.overlay.overlayfs=1 ds=nocloud;s={{ nocloud_url }} hostname={{ hostname }}",
            true,
        );
        let got = render_script(&host(), &img, &B).unwrap();
        let kernel = "kernel http://10.99.0.1:8080/images/testnode/vmlinuz initrd=initrd.gz initrd=extra.cpio console=ttyS0,115200 BOOTIF=01-52-54-00-12-34-56 root=live:http://10.99.0.1:8080/images/testnode/image.squashfs rd.live.overlay.overlayfs=1 ds=nocloud;s=http://10.99.0.1:8080/nocloud/feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface/ hostname=node-0";
        let initrd1 = "initrd http://10.99.0.1:8080/images/testnode/initrd.gz";
        let initrd2 = "initrd http://mirror.example/extra.cpio";
        // Each download: three tries that go on (a pause after a failure), then the one that fails the script.
        let tried = |cmd: &str, label: &str| {
            format!("{cmd} && goto {label} || sleep 3\n").repeat(3) + &format!("{cmd}\n:{label}\n")
        };
        assert_eq!(
            got,
            format!(
                "#!ipxe\necho Beowulf: node-0 (52:54:00:12:34:56) boots image testnode\n{}{}{}boot\n",
                tried(kernel, "beowulf_kernel"),
                tried(initrd1, "beowulf_initrd1"),
                tried(initrd2, "beowulf_initrd2"),
            )
        );
    }

    #[test]
    fn undefined_variables_are_errors() {
        let err = check_cmdline(&image("root=live:{{ rootfs_url }}", false)).unwrap_err();
        assert!(err.to_string().contains("undefined"), "{err}");
        let err = check_cmdline(&image("x={{ hostnme }}", true)).unwrap_err();
        assert!(err.to_string().contains("undefined"), "{err}");
        assert!(check_cmdline(&image("x={{ hostname }}", false)).is_ok());
        assert!(check_cmdline(&image("x={{ hostname ", false)).is_err());
    }

    #[test]
    fn empty_cmdline_leaves_no_trailing_space() {
        let got = render_script(&host(), &image("", false), &B).unwrap();
        assert!(got.contains("initrd=extra.cpio\n"), "{got}");
    }
}
