# Copyright: glm-deploy developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# Controller-side: lists Lambda Cloud instances through the API and names their hardware from glm-deploy's catalog.
from __future__ import annotations

DOCUMENTATION = r"""
name: lambda_cloud
author: glm-deploy developers (!UNKNOWN)
short_description: Lambda Cloud instances as hosts, with the glm-deploy hardware of their instance type
version_added: "0.1.0"
description:
  - Lists the instances of a Lambda Cloud account (C(GET /api/v1/instances)) as hosts of the group O(group)
    (C(glm_servers), the group the glm.deploy playbooks serve), keeping those that pass the filters
    O(name_prefix), O(tags), O(regions), O(instance_types) and O(statuses) (by default, active instances only).
  - Every host gets the instance's fields as variables with the prefix C(lambda_) (C(lambda_id), C(lambda_name),
    C(lambda_status), C(lambda_ip), C(lambda_private_ip), C(lambda_hostname), C(lambda_region),
    C(lambda_region_description), C(lambda_instance_type), C(lambda_instance_type_description),
    C(lambda_gpu_description), C(lambda_price_cents_per_hour), C(lambda_specs), C(lambda_tags) (a mapping),
    C(lambda_ssh_key_names), C(lambda_file_system_names), C(lambda_file_system_mounts),
    C(lambda_firewall_ruleset_ids)), plus C(ansible_host) (the public IP), C(glm_private_ip) (the private IP, which
    multi-node plans use between nodes) and C(glm_hardware) (the catalog's hardware of the instance type, e.g.
    C(gpu_8x_b200_sxm6) is C(b200)). The instance's JupyterLab token and URL are never kept.
  - An instance with a Lambda filesystem attached also gets C(glm_filesystem_name) (the first of its
    C(file_system_names)) and C(glm_filesystem_mount) (its mount point from C(file_system_mounts), else Lambda's
    default C(/lambda/nfs/<name>)). The glm.deploy.plan role then keeps the Hugging Face cache on that filesystem
    (option C(hf_home) becomes C(<mount>/glm-deploy/hf) unless the inventory sets it), so a relaunch in the same
    region finds the weights there. A filesystem name outside Lambda's pattern (letters first, then letters, digits
    or C(-)) or a mount point outside C(/home), C(/lambda/nfs) and C(/data) is refused, since it reaches a path.
  - An instance whose type the catalog does not map to hardware is refused with a message naming the type; leave
    it out with O(instance_types) or O(name_prefix), or name its hardware in O(hardware_by_instance_type).
  - Hosts are added in the order of their names (then ids), so a multi-node plan's ranks stay the same from one
    run to the next.
  - The API key comes from the environment variable E(LAMBDA_API_KEY), or from the file named by O(api_key_file).
    It is only ever sent in the Authorization header of requests to O(api_url), and never kept in a variable, an
    option, the inventory cache or a message.
  - Answers of HTTP 429 (Lambda allows about one request per second) are waited out, for C(Retry-After) seconds
    when the answer gives them, at most O(rate_limit_retries) times and never longer than O(rate_limit_max_wait)
    at once. Other errors are reported by the API's C(error.code) (for instance C(global/invalid-api-key)).
  - Needs the glm-deploy Python package in the Python that runs Ansible (it reads the catalog).
  - The configuration file's name must end in C(lambda_cloud.yml) or C(lambda_cloud.yaml).
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: The name of this plugin; it marks the file as this plugin's configuration.
    required: true
    type: str
    choices: [glm.deploy.lambda_cloud]
  api_url:
    description:
      - Where the Lambda Cloud API is (the requests go to paths under C(/api/v1) there).
      - Tests point it at a stand-in.
    type: str
    default: https://cloud.lambda.ai
    env:
      - name: LAMBDA_API_URL
  api_key_file:
    description:
      - A file holding the API key on its first line (keep it mode 0600). When set, it is used instead of
        E(LAMBDA_API_KEY).
    type: path
    env:
      - name: LAMBDA_API_KEY_FILE
  validate_certs:
    description: Whether to check the TLS certificate of O(api_url).
    type: bool
    default: true
  request_timeout:
    description: Seconds to wait for one answer of the API.
    type: float
    default: 30
  rate_limit_retries:
    description: How many times a request answered with HTTP 429 is sent again before the inventory fails.
    type: int
    default: 5
  rate_limit_max_wait:
    description: The longest wait, in seconds, before one retry; a C(Retry-After) asking for more fails at once.
    type: float
    default: 60
  group:
    description: The group every listed host joins (the glm.deploy playbooks serve C(glm_servers)).
    type: str
    default: glm_servers
  hostname_source:
    description:
      - What names a host in the inventory; C(name) falls back to the id for an instance without a name.
      - Two instances of one name are refused under C(name).
    type: str
    choices: [name, id]
    default: name
  name_prefix:
    description: Keep only instances whose name starts with this.
    type: str
  tags:
    description:
      - Keep only instances carrying every one of these tags; a value of C(null) matches any value of the key.
    type: dict
  regions:
    description: Keep only instances in these regions (for instance C(us-east-1)).
    type: list
    elements: str
  instance_types:
    description: Keep only instances of these instance types (for instance C(gpu_8x_b200_sxm6)).
    type: list
    elements: str
  hardware_by_instance_type:
    description:
      - Instance types the catalog does not map to hardware yet (Lambda adds types before the catalog records
        them), each with the catalog hardware it is, for instance C(gpu_8x_h200_sxm5) to C(h200).
      - Added to the catalog's own C(lambda_instance_types), and wins over it; a hardware name the catalog does not
        have is refused.
    type: dict
    default: {}
  statuses:
    description:
      - Keep only instances in these states. A booting instance has no address yet, and a terminating one will
        not answer for long.
    type: list
    elements: str
    choices: [booting, active, unhealthy, terminated, terminating, preempted]
    default: [active]
notes:
  - Ansible reports an inventory source it cannot read as a warning and goes on without its hosts; set
    C(unparsed_is_failed = true) in the C([inventory]) section of ansible.cfg (E(ANSIBLE_INVENTORY_UNPARSED_FAILED))
    to stop instead.
  - With O(cache) on, the cache holds the instances as the API listed them (without the JupyterLab token and URL);
    C(ansible-inventory --flush-cache) lists them afresh. The cache is per configuration file, not per API key.
seealso:
  - name: Lambda Cloud API keys
    description: Where a key for E(LAMBDA_API_KEY) is made.
    link: https://cloud.lambda.ai/api-keys
"""

EXAMPLES = r"""
# inventories/lambda/glm.lambda_cloud.yml: the active instances whose names start with "glm-", in glm_servers.
# Run with the key in the environment: LAMBDA_API_KEY=... ansible-inventory -i inventories/lambda --graph
plugin: glm.deploy.lambda_cloud
name_prefix: glm-
keyed_groups:
  # lambda_region_us_east_1, lambda_type_gpu_8x_b200_sxm6, hardware_b200
  - key: lambda_region
    prefix: lambda_region
  - key: lambda_instance_type
    prefix: lambda_type
  - key: glm_hardware
    prefix: hardware

---
# Only B200 nodes tagged for this project, from a key file, the listing cached for five minutes.
plugin: glm.deploy.lambda_cloud
api_key_file: ~/.config/lambda/api-key
instance_types: [gpu_8x_b200_sxm6]
tags:
  project: glm
compose:
  # the Lambda guest agent's metrics port, for a firewall check
  guest_agent_metrics: "lambda_ip ~ ':9101'"
groups:
  expensive: lambda_price_cents_per_hour > 2000
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/glm-deploy/lambda-inventory
cache_timeout: 300
"""

from ansible.errors import AnsibleError  # noqa: E402 - below the documentation, as Ansible wants
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable  # noqa: E402
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_api import (  # noqa: E402
    LambdaApiError,
    LambdaCloudClient,
    api_key_from,
)
from ansible_collections.glm.deploy.plugins.module_utils.lambda_cloud_instances import (  # noqa: E402
    InstanceError,
    check_filters,
    host_variables,
    hostnames,
    public_record,
    select,
)
from ansible_collections.glm.deploy.plugins.plugin_utils.glm_deploy_package import glm_deploy_imports  # noqa: E402

PLUGIN = "the glm.deploy.lambda_cloud inventory plugin"
CONFIG_ENDINGS = ("lambda_cloud.yml", "lambda_cloud.yaml")


def hardware_by_instance_type(extra=None):
    """{Lambda instance type: glm-deploy hardware} from the catalog's `lambda_instance_types`, and `extra` (the
    option hardware_by_instance_type) over it, each of its hardware names checked against the catalog."""
    with glm_deploy_imports(PLUGIN):
        from glm_deploy.catalog import load_catalog
        from glm_deploy.errors import GlmDeployError
    try:
        catalog = load_catalog()
    except GlmDeployError as error:
        raise AnsibleError(f"{PLUGIN}: {error}") from None
    mapping = {
        instance_type: hardware.name
        for hardware in catalog.hardware.values()
        for instance_type in hardware.lambda_instance_types
    }
    for instance_type, hardware in sorted((extra or {}).items()):
        if not isinstance(hardware, str) or hardware not in catalog.hardware:
            raise AnsibleError(
                f"{PLUGIN}: hardware_by_instance_type maps {str(instance_type)[:80]!r} to {str(hardware)[:80]!r}, "
                f"which is not hardware of the catalog (one of: {', '.join(sorted(catalog.hardware))})"
            )
        mapping[str(instance_type)] = hardware
    return mapping


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "glm.deploy.lambda_cloud"

    def verify_file(self, path):
        return super().verify_file(path) and str(path).endswith(CONFIG_ENDINGS)

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        # Read first: without the glm-deploy package nothing else could work, whatever the API says.
        hardware_by_type = hardware_by_instance_type(self.get_option("hardware_by_instance_type"))
        try:
            check_filters(self.get_option("statuses"), self.get_option("tags"))
            instances = self._instances(path, cache)
            selected = select(
                instances,
                name_prefix=self.get_option("name_prefix"),
                tags=self.get_option("tags"),
                regions=self.get_option("regions"),
                instance_types=self.get_option("instance_types"),
                statuses=self.get_option("statuses"),
            )
            hosts = [
                (hostname, host_variables(instance, hardware_by_type))
                for hostname, instance in hostnames(selected, self.get_option("hostname_source"))
            ]
        except (LambdaApiError, InstanceError) as error:
            raise AnsibleError(f"{PLUGIN} ({path}): {error}") from None
        self._populate(hosts)

    def _instances(self, path, cache):
        """The account's instances without their secrets: from the inventory cache when it may be used and holds
        them, else from the API (and then into the cache when it is on)."""
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache")
        if use_cache and cache:
            try:
                return self._cache[cache_key]
            except KeyError:
                pass
        instances = [public_record(instance) for instance in self._client().list_instances()]
        if use_cache:
            self._cache[cache_key] = instances
        return instances

    def _client(self):
        key, origin = api_key_from(self.get_option("api_key_file"))
        return LambdaCloudClient(
            key,
            key_origin=origin,
            api_url=self.get_option("api_url"),
            timeout=self.get_option("request_timeout"),
            validate_certs=self.get_option("validate_certs"),
            rate_limit_retries=self.get_option("rate_limit_retries"),
            rate_limit_max_wait=self.get_option("rate_limit_max_wait"),
        )

    def _populate(self, hosts):
        group = self.inventory.add_group(self.get_option("group"))
        strict = self.get_option("strict")
        for hostname, variables in hosts:
            self.inventory.add_host(hostname, group=group)
            for name, value in variables.items():
                self.inventory.set_variable(hostname, name, value)
            self._set_composite_vars(self.get_option("compose"), variables, hostname, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), variables, hostname, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, hostname, strict=strict)
